public import Foundation
import GuestVaultCore
import GuestVaultCrypto

/// `guestvault-backup.json` in a backup directory: which containers it holds, at which
/// generation, and the SHA-256 of each copy. An index, not a trust anchor: a restore
/// takes the VM, container id and generation from the copies themselves, which only
/// open with their keys (docs/BACKUP.md).
public struct BackupManifest: Sendable, Codable, Equatable {
    public static let fileName = "guestvault-backup.json"
    public static let formatName = "guestvault-backup"
    public static let currentVersion = 1
    /// Larger manifests are refused unread.
    static let maximumByteCount = 4 << 20
    /// More containers than this in one backup are refused.
    static let maximumItems = 4096

    public struct Item: Sendable, Codable, Equatable {
        /// The copy's file name inside the backup directory.
        public let file: String
        /// Where the container was (its file name is where a restore puts it).
        public let source: String
        public let vm: UUID
        /// 32 hex digits.
        public let containerID: String
        public let generation: UInt64
        /// Unix time of the copied commit.
        public let committed: UInt64
        public let bytes: Int64
        public let sha256: String
        public let entries: [String]
        /// Time to copy and verify, in seconds.
        public let seconds: Double

        public init(file: String, source: String, vm: UUID, containerID: String, generation: UInt64, committed: UInt64,
                    bytes: Int64, sha256: String, entries: [String], seconds: Double) {
            self.file = file
            self.source = source
            self.vm = vm
            self.containerID = containerID
            self.generation = generation
            self.committed = committed
            self.bytes = bytes
            self.sha256 = sha256
            self.entries = entries
            self.seconds = seconds
        }

        /// The file name a restore gives the container: the last component of its source.
        public var restoredName: String { (source as NSString).lastPathComponent }
    }

    public let format: String
    public let version: Int
    /// Unix time the backup was made.
    public let created: UInt64
    public let items: [Item]

    public init(created: UInt64, items: [Item]) {
        self.format = Self.formatName
        self.version = Self.currentVersion
        self.created = created
        self.items = items
    }

    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return Array(try encoder.encode(self)) + [0x0a]
    }

    /// Parses a manifest as hostile input: size capped, format and version checked,
    /// every file name a plain name inside the directory, no name twice.
    public static func parse(_ data: [UInt8], subject: String) throws -> BackupManifest {
        guard data.count <= maximumByteCount else {
            throw BackupError(.tooLarge, subject: subject, reason: "a backup manifest is at most \(maximumByteCount) bytes, this one is \(data.count)")
        }
        let manifest: BackupManifest
        do {
            manifest = try JSONDecoder().decode(BackupManifest.self, from: Data(data))
        } catch {
            throw BackupError(.malformed, subject: subject, reason: "not a backup manifest (its JSON does not parse: \(String(describing: error).prefix(200)))")
        }
        guard manifest.format == formatName, manifest.version == currentVersion else {
            throw BackupError(.malformed, subject: subject, reason: "format \(manifest.format) version \(manifest.version) is not \(formatName) version \(currentVersion)")
        }
        guard manifest.items.count <= maximumItems else {
            throw BackupError(.tooLarge, subject: subject, reason: "more than \(maximumItems) containers")
        }
        var seen = Set<String>(), restored = Set<String>()
        for item in manifest.items {
            guard isPlainName(item.file), isPlainName(item.restoredName) else {
                throw BackupError(.malformed, subject: subject, reason: "\"\(item.file)\" (from \(item.source)) is not a plain file name")
            }
            guard seen.insert(item.file).inserted, restored.insert(item.restoredName).inserted else {
                throw BackupError(.malformed, subject: subject, reason: "\(item.file) (or its name \(item.restoredName)) is listed twice")
            }
            guard item.containerID.utf8.count == 32, bytes(fromHex: item.containerID) != nil, item.sha256.utf8.count == 64, bytes(fromHex: item.sha256) != nil else {
                throw BackupError(.malformed, subject: subject, reason: "\(item.file): the container id or SHA-256 is not hex of the right length")
            }
        }
        return manifest
    }

    /// A file name with no directory part, not `.`/`..`, no controls, at most 255 bytes.
    static func isPlainName(_ name: String) -> Bool {
        let count = name.utf8.count
        return count >= 1 && count <= 255 && name != "." && name != ".." && !name.utf8.contains(UInt8(ascii: "/"))
            && !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
    }
}
