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

    /// The category that describes `error` best: every GuestVault error carries its
    /// code and category (``GuestVaultError``), kept across modules by ``ErrorChain``.
    static func category(of error: any Error) -> ErrorCategory {
        ErrorChain.category(of: error)
    }
}
