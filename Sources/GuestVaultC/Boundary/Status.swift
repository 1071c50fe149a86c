import GuestVaultCore

/// The status codes of the C API: 0 for success, and one fixed negative number per
/// ``ErrorCategory`` (the negated exit code of the `guestvault` tool), so the mapping is
/// stable as long as the categories are.
enum Status {
    static let ok: Int32 = 0

    static func code(_ category: ErrorCategory) -> Int32 { -category.exitCode }

    static func category(_ status: Int32) -> ErrorCategory? {
        ErrorCategory.allCases.first { code($0) == status }
    }

    /// The category that describes `error` best. Errors of the shared shape
    /// (``GuestVaultError``) say it themselves; module errors that do not conform yet
    /// are classified by their code's name, so a C caller sees the same category the
    /// CLI's exit code gives once they do.
    static func category(of error: any Error) -> ErrorCategory {
        let shared = ErrorChain.category(of: error)
        if shared != .failure { return shared }
        for item in ErrorChain.chain(error) {
            if let name = codeName(of: item), let category = legacyCategories[name] { return category }
        }
        return .failure
    }

    /// The `code.name` (or `code` description) of an error that has one.
    private static func codeName(of error: any Error) -> String? {
        guard let code = Mirror(reflecting: error).children.first(where: { $0.label == "code" })?.value else { return nil }
        if let name = Mirror(reflecting: code).children.first(where: { $0.label == "name" })?.value as? String { return name }
        return String(describing: code)
    }

    private static let legacyCategories: [String: ErrorCategory] = [
        "notFound": .notFound, "noSuchEntry": .notFound, "tokenNotFound": .notFound,
        "alreadyExists": .alreadyExists,
        "insecurePermissions": .permission,
        "locked": .locked,
        "wrongPassphrase": .keys, "passphraseRequired": .keys, "wrongPIN": .keys, "noUsableSlot": .keys,
        "notAContainer": .integrity, "truncated": .integrity, "malformed": .integrity,
        "authenticationFailed": .integrity, "authenticationFailure": .integrity, "corrupt": .integrity,
        "corruptSlot": .integrity,
        "rollback": .rollback,
        "limit": .limit, "slotLimit": .limit, "tooLarge": .limit,
        "io": .io, "moduleUnavailable": .io,
        "invalidName": .usage, "invalidArgument": .usage, "readOnly": .usage, "notUnlocked": .usage,
        "unsupported": .unsupported,
    ]
}
