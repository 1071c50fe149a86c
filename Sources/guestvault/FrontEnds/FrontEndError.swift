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

/// An error of a front end (`swtpm`, `swtpm_setup`, `swtpm_ioctl`); its message names the
/// program and the flag or file it is about.
struct FrontEndError: GuestVaultError {
    let code: ErrorCode
    let message: String
    let underlying: (any Error & Sendable)?
    let location: SourceLocation

    init(_ code: ErrorCode, _ message: String, underlying: (any Error & Sendable)? = nil,
         file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    static func usage(_ program: String, _ message: String) -> FrontEndError {
        FrontEndError(.frontEndUsage, "\(program): \(message)")
    }
}
