import GuestVaultCrypto

/// The checks a reader without keys verifies in a container file, recomputed the way
/// anyone who edits a file can (docs/FORMAT.md §2, §3): the superblock checksum, every
/// record's check and every stream header's check. A mutator that repairs them lets the
/// fuzzer reach the code behind the checks instead of stopping at the first hash.
/// Keyed values (the commit authenticator, GCM tags) are left alone.
public enum ContainerChecks {
    static let superblockMagic = Array("GVSTATE\u{0}".utf8)
    static let recordMagic = Array("GVLR".utf8)
    static let logStart = 4096
    static let recordHeaderCount = 32
    static let streamHeaderCount = 48

    public static func repair(_ bytes: UnsafeMutableBufferPointer<UInt8>) {
        let count = bytes.count
        if count >= 64, Array(bytes[0..<8]) == superblockMagic {
            put(sha256(bytes[0..<56]).prefix(8), into: bytes, at: 56)
        }
        var offset = logStart
        while offset + recordHeaderCount <= count {
            guard Array(bytes[offset..<(offset + 4)]) == recordMagic, (1...3).contains(bytes[offset + 4]),
                  bytes[offset + 5] == 0, bytes[offset + 6] == 0, bytes[offset + 7] == 0 else { return }
            let length = bytes[(offset + 8)..<(offset + 16)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let bodyStart = offset + recordHeaderCount
            guard length <= UInt64(count - bodyStart) else { return }
            let bodyEnd = bodyStart + Int(length)
            let checkedEnd: Int
            if bytes[offset + 4] == 2 {
                guard length >= UInt64(streamHeaderCount) else { return }
                put(sha256(bytes[bodyStart..<(bodyStart + 40)]).prefix(8), into: bytes, at: bodyStart + 40)
                checkedEnd = bodyStart + streamHeaderCount
            } else {
                checkedEnd = bodyEnd
            }
            let check = sha256(Array(bytes[offset..<(offset + 16)]) + Array(bytes[bodyStart..<checkedEnd]))
            put(check.prefix(16), into: bytes, at: offset + 16)
            offset = bodyEnd
        }
    }

    /// Recomputes the 8-byte check of a 48-byte stream header at the start of `bytes`.
    public static func repairStreamHeader(_ bytes: UnsafeMutableBufferPointer<UInt8>) {
        guard bytes.count >= streamHeaderCount else { return }
        put(sha256(bytes[0..<40]).prefix(8), into: bytes, at: 40)
    }

    /// The 32-byte record header of a record of `kind` whose checked body is `checked`.
    public static func recordHeader(kind: UInt8, bodyLength: UInt64, checked: [UInt8]) -> [UInt8] {
        var header = recordMagic + [kind, 0, 0, 0]
        for shift in stride(from: 56, through: 0, by: -8) { header.append(UInt8(truncatingIfNeeded: bodyLength >> UInt64(shift))) }
        return header + sha256(header + checked).prefix(16)
    }

    static func sha256(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        do {
            return try SHA256.hash(Array(bytes))
        } catch {
            fatalError("fuzz harness: SHA-256 failed: \(error)")
        }
    }

    static func put(_ value: some Collection<UInt8>, into bytes: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        for (i, byte) in value.enumerated() { bytes[offset + i] = byte }
    }
}
