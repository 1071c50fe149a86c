import GuestVaultCore

extension ErrorCode {
    /// A flag or value of swtpm's, swtpm_setup's or swtpm_ioctl's that the front end does
    /// not support, or a flag it needs that is missing.
    static let frontEndUsage = ErrorCode("frontEndUsage", .usage)
    /// Something swtpm can do that GuestVault's front end cannot (yet).
    static let frontEndUnsupported = ErrorCode("frontEndUnsupported", .unsupported)
    /// The state directory holds something the front end will not touch.
    static let frontEndState = ErrorCode("frontEndState", .failure)
}

/// What a front end's errors are about: `FrontEndError` is an error of a front end
/// (`swtpm`, `swtpm_setup`, `swtpm_ioctl`); its message names the program and the flag or
/// file it is about.
enum FrontEndErrorDomain {}
typealias FrontEndError = DomainError<FrontEndErrorDomain>

extension DomainError where Domain == FrontEndErrorDomain {
    static func usage(_ program: String, _ message: String) -> FrontEndError {
        FrontEndError(.frontEndUsage, "\(program): \(message)")
    }
}
