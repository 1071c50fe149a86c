import FoundationEssentials
import GuestVaultCore

extension TPMServer {
    /// How state blobs leave and enter on the control channel, and the shared-storage
    /// lock hand-off. These are `serve`'s `--migration-key`, `--allow-plaintext-migration`
    /// and `--migration` options; the swtpm front ends set them from swtpm's flags.
    public struct Migration: Sendable, Hashable {
        /// swtpm's `--migration-key`: GET_STATEBLOB blobs are encrypted with it as swtpm
        /// does, and SET_STATEBLOB opens swtpm's. Without it, blobs are sealed under the
        /// container's migration key (docs/MIGRATION-BLOB.md).
        public var key: MigrationKeySpec?
        /// Hand out and accept plaintext blobs (for an swtpm without a migration key).
        /// Logged at every blob.
        public var allowPlaintext: Bool
        /// swtpm's `--migration release-lock-outgoing`: give the container's writer lock
        /// up once QEMU has taken the savestate blob (the last of the three).
        public var releaseLockOutgoing: Bool
        /// swtpm's `--migration incoming`: do not take the writer lock at start; take it
        /// when the state arrives (SET_STATEBLOB), at CMD_INIT, or at LOCK_STORAGE.
        public var incoming: Bool

        public init(key: MigrationKeySpec? = nil, allowPlaintext: Bool = false, releaseLockOutgoing: Bool = false,
                    incoming: Bool = false) {
            self.key = key
            self.allowPlaintext = allowPlaintext
            self.releaseLockOutgoing = releaseLockOutgoing
            self.incoming = incoming
        }

        /// Sets the two lock settings from swtpm's `--migration [incoming][,release-lock-outgoing]`.
        public mutating func parseSwtpmMigrationOption(_ text: String) throws {
            for part in text.split(separator: ",") {
                switch part.trimmingWhitespace() {
                case "incoming", "incoming=true": incoming = true
                case "incoming=false": incoming = false
                case "release-lock-outgoing", "release-lock-outgoing=true": releaseLockOutgoing = true
                case "release-lock-outgoing=false": releaseLockOutgoing = false
                default:
                    throw SwtpmFormatError(.badKeyOption, file: "--migration", offset: nil,
                                           "unknown setting `\(part)` in `--migration \(text)` (known: incoming, release-lock-outgoing)")
                }
            }
        }
    }

    /// The blobs of one GET_STATEBLOB round: one blob set id and the generation it started at.
    struct OutgoingSet {
        let id: [UInt8]
        let generation: UInt64
        var handedOut: Set<TPMStateBlob>
    }

    /// Blobs accepted by SET_STATEBLOB, held until CMD_INIT commits them together (a
    /// refused blob drops the whole set and nothing reaches the container).
    struct IncomingSet {
        var blobs: [TPMStateBlob: [UInt8]] = [:]
        var deleting: Set<TPMStateBlob> = []
        /// The sealed set the blobs belong to (nil for swtpm or plaintext blobs).
        var sealed: SealedMigrationBlob.Binding?
        /// Whether this set took the writer lock (given back if the set is refused).
        var tookLock = false
    }
}
