import FoundationEssentials
import GuestVaultCrypto
import GuestVaultKeys

/// A commit record as bytes, and its authenticator (docs/FORMAT.md §3.3): computed from
/// values, no I/O.
struct CommitRecord {
    /// The whole record: header and body.
    var bytes: [UInt8]
    var manifest: Manifest
    /// Bytes 0..<16 of the record header (covered by the authenticator).
    var headerPrefix: [UInt8]

    /// Builds and authenticates the commit of `generation`.
    init(generation: UInt64, previous: Int64, slots: KeyProtectorSet, entries: [EntryRecord], keys: EntryKeys,
         superblockBytes: [UInt8], timestamp: UInt64 = UInt64(Date().timeIntervalSince1970)) throws {
        var manifest = Manifest(generation: generation, timestamp: timestamp, previousCommit: previous,
                                slots: slots, entries: entries, auth: [])
        let unauthenticated = manifest.unauthenticatedBody()
        let prefix = RecordHeader.prefix(kind: .commit, bodyLength: UInt64(unauthenticated.count + Manifest.authCount))
        manifest.auth = try Self.authenticator(unauthenticatedBody: unauthenticated, keys: keys, superblockBytes: superblockBytes,
                                               headerPrefix: prefix)
        let body = unauthenticated + manifest.auth
        bytes = try RecordHeader.make(kind: .commit, bodyLength: UInt64(body.count), checkedBody: body).encoded() + body
        self.manifest = manifest
        headerPrefix = prefix
    }

    /// HMAC-SHA256(manifest key, superblock (64) || record header bytes 0..<16 || body
    /// without the authenticator).
    static func authenticator(manifest: Manifest, keys: EntryKeys, superblockBytes: [UInt8], headerPrefix: [UInt8]) throws -> [UInt8] {
        try authenticator(unauthenticatedBody: manifest.unauthenticatedBody(), keys: keys, superblockBytes: superblockBytes,
                          headerPrefix: headerPrefix)
    }

    static func authenticator(unauthenticatedBody: [UInt8], keys: EntryKeys, superblockBytes: [UInt8], headerPrefix: [UInt8]) throws -> [UInt8] {
        var mac = try HMACSHA256(key: keys.manifestKey)
        try mac.update(superblockBytes)
        try mac.update(headerPrefix)
        try mac.update(unauthenticatedBody)
        return try mac.finalize()
    }
}
