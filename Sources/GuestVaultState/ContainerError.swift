/// The one error type of the sealed state: what failed, on which container file, entry
/// or byte offset, and what to do.
public struct ContainerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Not a GuestVault container (bad magic, unknown version).
        public static let notAContainer = Code("notAContainer")
        /// The file ends inside a structure that must be complete.
        public static let truncated = Code("truncated")
        /// A structure is malformed: a length, a count or a field out of range.
        public static let malformed = Code("malformed")
        /// Authentication failed: the metadata or an entry was changed, or belongs to
        /// another container or VM.
        public static let authenticationFailed = Code("authenticationFailed")
        /// The generation is older than the vault has seen for this VM.
        public static let rollback = Code("rollback")
        /// Another process holds the container for writing.
        public static let locked = Code("locked")
        /// No such entry.
        public static let noSuchEntry = Code("noSuchEntry")
        /// An entry name is not allowed (empty, too long, not printable).
        public static let invalidName = Code("invalidName")
        /// The container must be unlocked (keys) for this.
        public static let notUnlocked = Code("notUnlocked")
        /// The container was opened read-only.
        public static let readOnly = Code("readOnly")
        /// A limit was reached (entry count, entry size).
        public static let limit = Code("limit")
        /// The file already exists.
        public static let alreadyExists = Code("alreadyExists")
        /// A file operation failed.
        public static let io = Code("io")
    }

    public let code: Code
    /// The container file, entry or offset the error is about.
    public let subject: String
    public let reason: String

    public init(_ code: Code, subject: String, reason: String) {
        self.code = code
        self.subject = subject
        self.reason = reason
    }

    public var description: String { "\(subject): \(reason)" }
}
