public import Foundation
import GuestVaultCore
import GuestVaultCrypto
package import GuestVaultState
public import Logging

/// Moves a sealed container between hosts (docs/TRANSFER.md §4): the sealed file as it
/// is, its DEK inside the encrypted session so the receiver can wrap it for its own
/// vault, and a final frame whose transcript and file digest the receiver checks before
/// anything becomes visible. The sender is in ContainerSender.swift, the receiver in
/// ContainerReceiver.swift, its partial file in PartialFile.swift.
public enum ContainerTransfer {
    public struct Progress: Sendable {
        public let bytes: UInt64
        public let total: UInt64
        public let seconds: Double
        public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
    }

    public struct Report: Sendable, Codable {
        public let vm: UUID
        public let generation: UInt64
        public let bytes: UInt64
        public let resumedFrom: UInt64
        public let seconds: Double
        /// Recipient mode: the sending vault's recipient public key (hex); nil with a PSK.
        public let sender: String?
    }

    static let dataChunk = 1 << 20
    static let ackEvery: UInt64 = 64 << 20
    static let writebackEvery: UInt64 = 8 << 20
    /// The largest container a receiver accepts unless told otherwise (1 TiB).
    public static let defaultMaximumBytes: UInt64 = 1 << 40

    /// What a transfer logs to when the caller gives no logger: nothing (a library
    /// does not choose where its records go; `guestvault` passes its own).
    public static let silentLogger = Logger(label: "guestvault.transfer") { _ in SwiftLogNoOpLogHandler() }

    /// A transfer id that is the same for the same container generation, so a retry
    /// after a broken connection resumes.
    package static func stableTransferID(_ container: GuestStateContainer) throws -> [UInt8] {
        var w = ByteWriter()
        w.raw(Array("GuestVault v1 transfer id".utf8))
        w.raw(container.containerID)
        w.u64(container.generation)
        w.u64(UInt64(clamping: container.logEnd))
        return Array(try SHA256.hash(w.bytes).prefix(16))
    }

    /// Seconds since `start` (a DispatchTime uptime in nanoseconds).
    static func seconds(since start: UInt64) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds &- start) / 1e9
    }
}

/// A peer's own words (an ERROR frame's text) made fit for a terminal and a log line:
/// printable ASCII only (anything else as \xNN), at most `limit` bytes of it, in quotes,
/// so a peer can neither send escape sequences nor fake lines of our output.
public enum PeerText {
    public static let limit = 160

    public static func quoted(_ bytes: some Collection<UInt8>) -> String {
        var out = "\""
        for byte in bytes.prefix(limit) {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += "\\" + String(UnicodeScalar(byte))
            case 0x20...0x7e: out.unicodeScalars.append(UnicodeScalar(byte))
            default: out += String(format: "\\x%02x", byte)
            }
        }
        out += "\""
        if bytes.count > limit { out += " (\(bytes.count - limit) more bytes not shown)" }
        return out
    }
}
