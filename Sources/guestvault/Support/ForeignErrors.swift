import Foundation
import GuestVaultCore
import GuestVaultVM

extension ErrorCode {
    /// A Foundation error that no module wrapped (a file the CLI read through Foundation).
    static let foundationFailure = ErrorCode("foundationFailure", .failure)
}

/// Foundation's errors as the CLI shows them: their short localized text, not a dump of
/// their domain and user info. (GuestVaultVM's ``Failure`` links only
/// FoundationEssentials, which has no localized descriptions, so the CLI, which links
/// Foundation, turns them into a ``CLIError`` first.)
enum ForeignErrors {
    static func readable(_ error: any Error) -> any Error {
        guard !(error is any GuestVaultError) else { return error }
        guard error is CocoaError || error is POSIXError || type(of: error) is NSError.Type else { return error }
        return CLIError(.foundationFailure, (error as NSError).localizedDescription)
    }
}
