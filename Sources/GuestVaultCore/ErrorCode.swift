/// What kind of failure an error is, stable across modules: a container's rollback
/// stays a rollback when the transfer or the CLI reports it. Each category has a fixed
/// exit code of the `guestvault` tool (README, `guestvault --help`), so scripts and
/// monitoring can act on it without parsing messages.
public enum ErrorCategory: String, Sendable, CaseIterable, Codable {
    /// Something failed that has no better category (a bug, an unexpected state).
    case failure
    /// The command line or a request is wrong.
    case usage
    /// A file, entry, vault, slot or key that was named does not exist.
    case notFound
    /// What was to be created exists already.
    case alreadyExists
    /// Ownership or permissions are unsafe or refuse the operation.
    case permission
    /// Another process holds the container or vault.
    case locked
    /// No key opens it: wrong passphrase, wrong vault, a peer key that is not accepted.
    case keys
    /// Data is corrupt, tampered with, truncated or not what it claims to be.
    case integrity
    /// The data is older than what the vault has already seen.
    case rollback
    /// A size, count or resource limit was reached.
    case limit
    /// A file-system or device operation failed (disk full, I/O error).
    case io
    /// The transfer peer or a protocol client failed, refused, or broke the protocol.
    case peer
    /// Nothing happened within the time allowed.
    case timeout
    /// A feature, version or option that this build does not support.
    case unsupported
    /// A boot-integrity policy does not match the measured state.
    case policyMismatch

    /// The `guestvault` tool's exit code for this category (always below 128).
    public var exitCode: Int32 {
        switch self {
        case .failure: 1
        case .usage: 2
        case .notFound: 3
        case .alreadyExists: 4
        case .permission: 5
        case .locked: 6
        case .keys: 7
        case .integrity: 8
        case .rollback: 9
        case .limit: 10
        case .io: 11
        case .peer: 12
        case .timeout: 13
        case .unsupported: 14
        case .policyMismatch: 15
        }
    }
}

/// A named error code with its category. Modules declare their codes as static members
/// in an extension (`extension ErrorCode { static let rollback = … }`); an error that
/// wraps another keeps the inner code when that is the better description.
public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public let category: ErrorCategory

    public init(_ name: String, _ category: ErrorCategory) {
        self.name = name
        self.category = category
    }

    public var description: String { name }
}

/// Where an error was made, for debugging; never shown in the one-line message.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public let file: String
    public let line: Int

    public init(file: String = #fileID, line: Int = #line) {
        self.file = file
        self.line = line
    }

    public var description: String { "\(file):\(line)" }
}

/// The one shape of every GuestVault error: a code (with its category), a one-line
/// message for people that says what failed and on what, the error that caused it (kept,
/// not flattened into the text), and where it was made.
public protocol GuestVaultError: Error, Sendable, CustomStringConvertible {
    var code: ErrorCode { get }
    /// One line: what failed, on which file, entry, frame or offset, and what to do.
    var message: String { get }
    /// The error that caused this one, if any.
    var underlying: (any Error & Sendable)? { get }
    var location: SourceLocation { get }
}

extension GuestVaultError {
    public var description: String { message }
    public var category: ErrorCategory { code.category }
}

/// Helpers over any error, GuestVault's or not.
public enum ErrorChain {
    /// The error and every error below it, outermost first.
    public static func chain(_ error: any Error) -> [any Error] {
        var result: [any Error] = [error]
        var current: any Error = error
        while let wrapped = current as? any GuestVaultError, let inner = wrapped.underlying, result.count < 32 {
            result.append(inner)
            current = inner
        }
        return result
    }

    /// The first GuestVault error in the chain that has `code`.
    public static func find(_ code: ErrorCode, in error: any Error) -> (any GuestVaultError)? {
        chain(error).lazy.compactMap { $0 as? any GuestVaultError }.first { $0.code == code }
    }

    /// Whether `code` appears anywhere in the chain.
    public static func contains(_ code: ErrorCode, in error: any Error) -> Bool {
        find(code, in: error) != nil
    }

    /// The category that describes the failure best: the outermost error's, unless it is
    /// the generic `.failure` and an inner error is more precise.
    public static func category(of error: any Error) -> ErrorCategory {
        let categories = chain(error).compactMap { ($0 as? any GuestVaultError)?.category }
        return categories.first { $0 != .failure } ?? .failure
    }

    /// The outermost message, with the causes it does not already state appended
    /// ("…: because …"), on one line.
    public static func message(of error: any Error) -> String {
        var parts: [String] = []
        for item in chain(error) {
            let text = (item as? any GuestVaultError)?.message ?? String(describing: item)
            if let last = parts.last, last.contains(text) { continue }
            if parts.contains(where: { $0.contains(text) }) { continue }
            parts.append(text)
        }
        return parts.joined(separator: ": ")
            .split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// An error that is no more than its code, message, cause and place: the shape written
/// once. A module names its own with a domain type, so that `catch let e as ClusterError`
/// still tells the modules apart:
///
/// ```swift
/// public enum ClusterErrorDomain {}
/// public typealias ClusterError = DomainError<ClusterErrorDomain>
/// throw ClusterError(.clusterFenced, "vm …: this member no longer owns it")
/// ```
public struct DomainError<Domain>: GuestVaultError {
    public let code: ErrorCode
    public let message: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, _ message: String, underlying: (any Error & Sendable)? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }
}
