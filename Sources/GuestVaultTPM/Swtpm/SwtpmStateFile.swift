import GuestVaultCore
import GuestVaultCrypto

/// swtpm 0.7's state file format: the files `tpm2-00.permall`, `tpm2-00.volatilestate`
/// and `tpm2-00.savestate` of a state directory, and the same envelope around the state
/// blobs of its control channel. docs/SWTPM.md describes it byte by byte.
///
/// Everything read is hostile: every length is checked against the bytes that are
/// there and against ``maximumFileByteCount``, records must fill the file exactly, and
/// encrypted data is authenticated (HMAC-SHA256, compared in constant time) before it
/// is decrypted. Errors are ``SwtpmFormatError``s that name the file and the offset.
public enum SwtpmStateFile {
    /// The size of the v2 header.
    public static let headerByteCount = 10
    /// The header version swtpm 0.7 writes, and the only one read here.
    public static let formatVersion: UInt8 = 2
    /// The largest file read or written. libtpms' TPM 2.0 state is far smaller (the
    /// permanent state is a few KiB to about 130 KiB, the volatile state about 10 KiB).
    public static let maximumFileByteCount = 1 << 20
    /// A record header: tag (u16) and length (u32), big-endian.
    public static let recordHeaderByteCount = 6
    static let hmacByteCount = 32
    static let digestByteCount = 32

    /// The header's flags word.
    public struct Flags: OptionSet, Sendable, Hashable, Codable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// The data are encrypted with the state key (records 2, 3 and 6).
        public static let encrypted = Flags(rawValue: 0x01)
        /// A blob whose inner records are encrypted with the migration key (5, 3, 7).
        public static let migrationEncrypted = Flags(rawValue: 0x02)
        /// A control-channel blob: the records are wrapped in a migration record.
        public static let migrationData = Flags(rawValue: 0x04)
        /// The state key is 256 bits (else 128).
        public static let stateKey256 = Flags(rawValue: 0x08)
        /// The migration key is 256 bits (else 128).
        public static let migrationKey256 = Flags(rawValue: 0x10)

        public static let known: Flags = [.encrypted, .migrationEncrypted, .migrationData, .stateKey256, .migrationKey256]
    }

    /// Record tags.
    public enum Tag: UInt16, Sendable, CaseIterable, Codable {
        case data = 1
        case encryptedData = 2
        case hmac = 3
        case migrationData = 4
        case encryptedMigrationData = 5
        case ivForEncryptedData = 6
        case ivForEncryptedMigrationData = 7

        public var name: String {
            switch self {
            case .data: "plain data (tag 1)"
            case .encryptedData: "encrypted data (tag 2)"
            case .hmac: "HMAC (tag 3)"
            case .migrationData: "migration data (tag 4)"
            case .encryptedMigrationData: "encrypted migration data (tag 5)"
            case .ivForEncryptedData: "IV (tag 6)"
            case .ivForEncryptedMigrationData: "migration IV (tag 7)"
            }
        }
    }

    /// The v2 header, as read.
    public struct Header: Sendable, Hashable {
        public let version: UInt8
        public let minimumVersion: UInt8
        public let headerSize: UInt16
        public let flags: Flags
        public let totalLength: UInt32
    }

    /// One record: its tag, where its 6-byte header starts, and its value (a slice of
    /// the bytes it was read from, so its indices are offsets in that buffer).
    public struct Record: Sendable {
        public let tag: Tag
        public let offset: Int
        public let value: ArraySlice<UInt8>
        public var valueOffset: Int { offset + SwtpmStateFile.recordHeaderByteCount }
    }

    /// Whether a file is swtpm's own state file or a control-channel blob.
    public enum Form: String, Sendable, Codable {
        /// A file of a state directory: the data records straight after the header.
        case stateFile
        /// A blob of the control channel (GET/SET_STATEBLOB): the data records wrapped in
        /// a migration record (tag 4), or encrypted with the migration key (5, 3, 7).
        case controlChannelBlob
    }

    /// What a file held.
    public struct Contents: Sendable {
        /// How the file was laid out.
        public enum Layout: String, Sendable, Codable {
            /// swtpm's v2 header and records (everything swtpm 0.2 and later writes).
            case v2
            /// No header: what swtpm wrote before 0.2, which 0.7 still reads.
            case headerless
        }

        /// The libtpms state blob.
        public let payload: [UInt8]
        public let layout: Layout
        /// The header's flags (empty for a header-less file).
        public let flags: Flags
        /// The state encryption the data were under, or nil if plain.
        public let encryption: SwtpmKey.Mode?
        /// The size of the file.
        public let fileByteCount: Int
    }

    // MARK: Reading

    /// Reads a state file (or blob) and returns the libtpms blob inside it.
    ///
    /// As swtpm does, a given `key` means the file must be encrypted with it, and no key
    /// means it must be plain. A file that does not start with the v2 header's version
    /// byte is read in the header-less form (see docs/SWTPM.md).
    ///
    /// - Parameters:
    ///   - file: the name used in errors (a path, or "tpm2-00.permall").
    ///   - migrationKey: for control-channel blobs encrypted with swtpm's migration key.
    public static func decode(
        _ bytes: [UInt8], file: String, key: SwtpmKey?, migrationKey: SwtpmKey? = nil, form: Form = .stateFile
    ) throws -> Contents {
        guard bytes.count <= maximumFileByteCount else {
            throw SwtpmFormatError(.tooLarge, file: file, offset: maximumFileByteCount,
                                   "the file is \(bytes.count) bytes; swtpm state files here are at most \(maximumFileByteCount) bytes")
        }
        guard let first = bytes.first else {
            throw SwtpmFormatError(.truncated, file: file, offset: 0, "the file is empty")
        }
        if first == formatVersion || form == .controlChannelBlob {
            do {
                return try decodeV2(bytes, file: file, key: key, migrationKey: migrationKey, form: form)
            } catch let headedError as SwtpmFormatError {
                // A header-less encrypted file starts with ciphertext, which may happen to
                // be 0x02. swtpm falls back the same way when the header does not check.
                guard form == .stateFile, let key, bytes.count % key.mode.keyByteCount == 0,
                      let old = try? decodeHeaderlessEncrypted(bytes, file: file, key: key) else { throw headedError }
                return old
            }
        }
        if let key {
            return try decodeHeaderlessEncrypted(bytes, file: file, key: key)
        }
        guard first == 0 else {
            throw SwtpmFormatError(.unsupportedVersion, file: file, offset: 0,
                                   "the first byte is 0x\(hex(first)): neither swtpm's v2 header (0x02) nor header-less libtpms data (0x00); this is not an swtpm state file this reader knows")
        }
        // Header-less plain data: the libtpms blob itself. libtpms' TPM 2.0 blobs start
        // with a big-endian 16-bit version, so their first byte is 0.
        return Contents(payload: bytes, layout: .headerless, flags: [], encryption: nil, fileByteCount: bytes.count)
    }

    /// Reads and checks the 10-byte v2 header at the start of `bytes`.
    public static func parseHeader(_ bytes: [UInt8], file: String) throws -> Header {
        guard bytes.count >= headerByteCount else {
            throw SwtpmFormatError(.truncated, file: file, offset: bytes.count,
                                   "the file ends after \(bytes.count) bytes, inside the \(headerByteCount)-byte header")
        }
        let header = try reading(file) { () throws(ByteCodecError) -> Header in
            var r = ByteReader(bytes, to: headerByteCount, subject: file)
            return Header(version: try r.u8("version"), minimumVersion: try r.u8("minimum version"),
                          headerSize: try r.u16("header size"), flags: Flags(rawValue: try r.u16("flags")),
                          totalLength: try r.u32("total length"))
        }
        guard header.version == formatVersion else {
            throw SwtpmFormatError(.unsupportedVersion, file: file, offset: 0,
                                   "header version \(header.version); only version \(formatVersion) (swtpm 0.2 to 0.7) is read here")
        }
        guard header.minimumVersion >= 1, header.minimumVersion <= header.version else {
            throw SwtpmFormatError(.unsupportedVersion, file: file, offset: 1,
                                   "the header asks for a reader of version \(header.minimumVersion) or later; this one reads version \(formatVersion)")
        }
        guard Int(header.headerSize) == headerByteCount else {
            throw SwtpmFormatError(.badHeader, file: file, offset: 2,
                                   "header size \(header.headerSize); the v2 header is \(headerByteCount) bytes")
        }
        let unknown = header.flags.subtracting(.known)
        guard unknown.isEmpty else {
            throw SwtpmFormatError(.badHeader, file: file, offset: 4,
                                   "unknown header flags 0x\(String(unknown.rawValue, radix: 16)) (known: 0x01 to 0x10)")
        }
        if header.flags.contains(.stateKey256) && !header.flags.contains(.encrypted) {
            throw SwtpmFormatError(.badHeader, file: file, offset: 4, "flag 0x08 (256-bit state key) without flag 0x01 (encrypted)")
        }
        if header.flags.contains(.migrationKey256) && !header.flags.contains(.migrationEncrypted) {
            throw SwtpmFormatError(.badHeader, file: file, offset: 4, "flag 0x10 (256-bit migration key) without flag 0x02 (migration-encrypted)")
        }
        if header.flags.contains(.migrationEncrypted) && !header.flags.contains(.migrationData) {
            throw SwtpmFormatError(.badHeader, file: file, offset: 4, "flag 0x02 (migration-encrypted) without flag 0x04 (migration data)")
        }
        let total = Int(header.totalLength)
        if total > bytes.count {
            throw SwtpmFormatError(.truncated, file: file, offset: bytes.count,
                                   "the header says the file is \(total) bytes, but it ends after \(bytes.count): it was cut short")
        }
        if total < bytes.count {
            throw SwtpmFormatError(.trailingBytes, file: file, offset: max(total, headerByteCount),
                                   "the header says the file is \(total) bytes, but \(bytes.count - total) more bytes follow")
        }
        return header
    }

    /// Splits `bytes` (a slice of the buffer that offsets refer to) into records. The
    /// records must fill it exactly; unknown tags are refused.
    public static func parseRecords(_ bytes: ArraySlice<UInt8>, file: String) throws -> [Record] {
        var records: [Record] = []
        var reader = ByteReader(Array(bytes), base: Int64(bytes.startIndex), subject: file)
        while !reader.isAtEnd {
            let position = bytes.startIndex + reader.offset
            let remaining = reader.remaining
            guard remaining >= recordHeaderByteCount else {
                throw SwtpmFormatError(.trailingBytes, file: file, offset: position,
                                       "\(remaining) stray bytes after the last record, too few for a record header")
            }
            let (rawTag, declared) = try reading(file) { () throws(ByteCodecError) -> (UInt16, UInt32) in
                (try reader.u16("record tag"), try reader.u32("record length"))
            }
            let length = Int(declared)
            guard let tag = Tag(rawValue: rawTag) else {
                throw SwtpmFormatError(.unknownTag, file: file, offset: position,
                                       "unknown record tag \(rawTag) (swtpm 0.7 defines 1 to 7)")
            }
            guard length <= remaining - recordHeaderByteCount else {
                throw SwtpmFormatError(.truncated, file: file, offset: position + 2,
                                       "the \(tag.name) record says it holds \(length) bytes, but only \(remaining - recordHeaderByteCount) follow")
            }
            if let earlier = records.first(where: { $0.tag == tag }) {
                throw SwtpmFormatError(.duplicateRecord, file: file, offset: position,
                                       "a second \(tag.name) record (the first is at byte \(earlier.offset))")
            }
            let start = position + recordHeaderByteCount
            try reading(file) { () throws(ByteCodecError) in try reader.skip(length, tag.name) }
            records.append(Record(tag: tag, offset: position, value: bytes[start..<(start + length)]))
        }
        return records
    }

    // MARK: The v2 layout

    static func decodeV2(_ bytes: [UInt8], file: String, key: SwtpmKey?, migrationKey: SwtpmKey?, form: Form) throws -> Contents {
        let header = try parseHeader(bytes, file: file)
        let flags = header.flags
        let records = try parseRecords(bytes[headerByteCount...], file: file)
        var dataRecords = records
        var dataFile = file
        switch (form, flags.contains(.migrationData)) {
        case (.stateFile, true):
            throw SwtpmFormatError(.badHeader, file: file, offset: 4,
                                   "flag 0x04 marks a control-channel state blob, not a state file; swtpm does not start from it")
        case (.controlChannelBlob, false):
            throw SwtpmFormatError(.badHeader, file: file, offset: 4,
                                   "flag 0x04 (migration data) is missing: this is a state file, not a control-channel blob")
        case (.stateFile, false):
            break
        case (.controlChannelBlob, true):
            if flags.contains(.migrationEncrypted) {
                guard let migrationKey else {
                    throw SwtpmFormatError(.keyRequired, file: file, offset: 4,
                                           "the blob is encrypted with swtpm's migration key (flag 0x02), and none was given")
                }
                let found = try expect(records, required: [.encryptedMigrationData, .hmac], optional: [.ivForEncryptedMigrationData],
                                       end: bytes.count, file: file, what: "a migration-encrypted blob")
                let inner = try open(found, dataTag: .encryptedMigrationData, ivTag: .ivForEncryptedMigrationData,
                                     key: migrationKey, flag256: flags.contains(.migrationKey256), flagName: "0x10", file: file)
                dataFile = "\(file) (inside the migration encryption)"
                dataRecords = try parseRecords(inner[...], file: dataFile)
            } else {
                let found = try expect(records, required: [.migrationData], optional: [], end: bytes.count, file: file, what: "a blob")
                dataRecords = try parseRecords(found[.migrationData]!.value, file: file)
            }
        }
        let end = dataRecords.last.map { $0.valueOffset + $0.value.count } ?? bytes.count
        if flags.contains(.encrypted) {
            guard let key else {
                throw SwtpmFormatError(.keyRequired, file: dataFile, offset: 4,
                                       "the data are encrypted (flag 0x01) with a \(flags.contains(.stateKey256) ? 256 : 128)-bit key; give the key with --key FILE or --pwdfile FILE\(flags.contains(.stateKey256) ? " and mode=aes-256-cbc" : "")")
            }
            let found = try expect(dataRecords, required: [.encryptedData, .hmac], optional: [.ivForEncryptedData],
                                   end: end, file: dataFile, what: "an encrypted file")
            let payload = try open(found, dataTag: .encryptedData, ivTag: .ivForEncryptedData, key: key,
                                   flag256: flags.contains(.stateKey256), flagName: "0x08", file: dataFile)
            return Contents(payload: payload, layout: .v2, flags: flags, encryption: key.mode, fileByteCount: bytes.count)
        }
        if key != nil && form == .stateFile {
            throw SwtpmFormatError(.notEncrypted, file: file, offset: 4,
                                   "the file is not encrypted (flag 0x01 is clear) but a key was given; swtpm would not start from it with that key. Leave out --key/--pwdfile")
        }
        let found = try expect(dataRecords, required: [.data], optional: [], end: end, file: dataFile, what: "a plain file")
        return Contents(payload: Array(found[.data]!.value), layout: .v2, flags: flags, encryption: nil, fileByteCount: bytes.count)
    }

    /// Checks that `records` are exactly the required ones plus any of the optional ones.
    static func expect(
        _ records: [Record], required: [Tag], optional: [Tag], end: Int, file: String, what: String
    ) throws -> [Tag: Record] {
        var found: [Tag: Record] = [:]
        for record in records {
            guard required.contains(record.tag) || optional.contains(record.tag) else {
                throw SwtpmFormatError(.unexpectedRecord, file: file, offset: record.offset,
                                       "a \(record.tag.name) record does not belong in \(what)")
            }
            found[record.tag] = record
        }
        for tag in required where found[tag] == nil {
            throw SwtpmFormatError(.missingRecord, file: file, offset: end,
                                   "\(what) needs a \(tag.name) record, and the records end here without one")
        }
        return found
    }

    // MARK: Bytes

    static func withHeader(_ body: [UInt8], flags: Flags) throws -> [UInt8] {
        let total = headerByteCount + body.count
        guard total <= maximumFileByteCount else {
            throw SwtpmFormatError(.tooLarge, file: "(new state file)", offset: nil,
                                   "the state would make a \(total)-byte file; the cap is \(maximumFileByteCount) bytes")
        }
        var out = ByteWriter(capacity: total)
        out.u8(formatVersion)
        out.u8(1)
        out.u16(UInt16(headerByteCount))
        out.u16(flags.rawValue)
        out.u32(UInt32(total))
        out.raw(body)
        return out.bytes
    }

    /// One record: tag (u16), length (u32), value. The caller keeps values under the
    /// file cap, so the length fits.
    static func appendRecord(_ tag: Tag, _ value: ArraySlice<UInt8>, to out: inout ByteWriter) {
        out.u16(tag.rawValue)
        out.u32(UInt32(value.count))
        out.raw(value)
    }

    static func record(_ tag: Tag, _ value: ArraySlice<UInt8>) -> [UInt8] {
        var out = ByteWriter(capacity: recordHeaderByteCount + value.count)
        appendRecord(tag, value, to: &out)
        return out.bytes
    }

    /// Runs reads whose bounds were checked before; a codec error there is still
    /// reported as this file's truncation, never a trap.
    static func reading<T>(_ file: String, _ body: () throws(ByteCodecError) -> T) throws(SwtpmFormatError) -> T {
        do {
            return try body()
        } catch {
            throw SwtpmFormatError(.truncated, file: file, offset: Int(error.position), error.reason, underlying: error)
        }
    }

    static func hex(_ byte: UInt8) -> String {
        let text = String(byte, radix: 16)
        return text.count == 1 ? "0" + text : text
    }
}
