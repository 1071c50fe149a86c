import GuestVaultCore

/// EFI_FIRMWARE_VOLUME_HEADER of the volume that holds the variable store.
public struct FirmwareVolumeHeader: Sendable, Hashable {
    public struct Block: Sendable, Hashable {
        public let count: UInt32
        public let length: UInt32
    }

    public let fileSystem: EFIGUID
    public let length: UInt64
    public let attributes: UInt32
    public let headerLength: UInt16
    public let checksum: UInt16
    public let extendedHeaderOffset: UInt16
    public let revision: UInt8
    public let blockMap: [Block]
}

/// VARIABLE_STORE_HEADER: the store that follows the firmware volume header.
public struct VariableStoreHeader: Sendable, Hashable {
    /// Offset of the header in the input.
    public let offset: Int
    public let signature: EFIGUID
    /// Whether variables carry the authenticated header (60 bytes) or the plain one (32).
    public var authenticated: Bool { signature == .authenticatedVariableStore }
    /// The store's size in bytes, this header included.
    public let size: UInt32
    /// 0x5A: formatted.
    public let format: UInt8
    /// 0xFE: healthy.
    public let state: UInt8
}

/// An OVMF/EDK2 variable store: the firmware volume header, the variable store header and
/// every variable in it, parsed from hostile bytes without I/O. Every length and offset
/// is checked against the input, the volume and the store; nothing traps.
public struct VariableStore: Sendable {
    public let volume: FirmwareVolumeHeader
    public let header: VariableStoreHeader
    /// Every variable in store order, deleted ones included.
    public let variables: [UEFIVariable]
    /// Offset just past the last variable (where free space begins).
    public let endOfVariables: Int

    /// The bytes of the store between the last variable and the store's end.
    public var freeBytes: Int { header.offset + Int(header.size) - endOfVariables }

    /// The live variables (VAR_ADDED, or in deleted transition with no added copy), in
    /// store order; computed once, in linear time, when the store is parsed.
    public let liveVariables: [UEFIVariable]

    init(volume: FirmwareVolumeHeader, header: VariableStoreHeader, variables: [UEFIVariable], endOfVariables: Int) {
        self.volume = volume
        self.header = header
        self.variables = variables
        self.endOfVariables = endOfVariables
        struct Key: Hashable { let name: String; let vendor: EFIGUID }
        let added = Set(variables.lazy.filter { $0.status == .added }.map { Key(name: $0.name, vendor: $0.vendor) })
        liveVariables = variables.filter { variable in
            switch variable.status {
            case .added: true
            case .inDeletedTransition: !added.contains(Key(name: variable.name, vendor: variable.vendor))
            default: false
            }
        }
    }

    /// The live variable with this name and vendor GUID (the last added copy wins).
    public func live(_ name: String, _ vendor: EFIGUID) -> UEFIVariable? {
        liveVariables.last { $0.name == name && $0.vendor == vendor }
    }

    /// Caps on what a store may claim.
    public struct Limits: Sendable {
        /// The largest input accepted (a 4 MiB OVMF build's VARS file is 528 KiB).
        public var maximumInputBytes = 64 << 20
        /// The most variables read from one store.
        public var maximumVariables = 65_536
        /// The longest name, in bytes of UTF-16 with its NUL.
        public var maximumNameBytes = 4_096
        /// The largest data of one variable.
        public var maximumDataBytes = 1 << 20
        public init() {}
        public static let standard = Limits()
    }

    // MARK: Constants

    static let firmwareVolumeSignature: UInt32 = 0x4856_465F   // "_FVH" read little-endian
    static let firmwareVolumeFixedHeader = 56
    static let storeHeaderBytes = 28
    static let authenticatedHeaderBytes = 60
    static let plainHeaderBytes = 32
    static let startID: UInt16 = 0x55AA
    static let formatted: UInt8 = 0x5A
    static let healthy: UInt8 = 0xFE
    static let maximumFirmwareVolumeHeader = 4_096

    /// Whether `bytes` starts like a firmware volume ("_FVH" at offset 40).
    public static func looksLikeFirmwareVolume(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.count >= 44 && Array(bytes.dropFirst(40).prefix(4)) == Array("_FVH".utf8)
    }

    // MARK: Parsing

    /// Parses a VARS file (or the same bytes from a container entry).
    public static func parse(_ bytes: [UInt8], limits: Limits = .standard) throws(UEFIFormatError) -> VariableStore {
        guard bytes.count <= limits.maximumInputBytes else {
            throw UEFIFormatError(.firmwareVolume, context: "variable store file", field: "size", offset: 0,
                                  reason: "\(bytes.count) bytes is over the limit of \(limits.maximumInputBytes)")
        }
        let volume = try parseVolume(bytes)
        let header = try parseStoreHeader(bytes, volume: volume)
        var variables: [UEFIVariable] = []
        let storeEnd = header.offset + Int(header.size)   // checked against the volume in parseStoreHeader
        let headerBytes = header.authenticated ? authenticatedHeaderBytes : plainHeaderBytes
        var offset = align4(header.offset + storeHeaderBytes)
        while storeEnd - offset >= 2 {
            let startID = UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
            if startID != Self.startID {
                guard startID == 0xFFFF else {
                    throw UEFIFormatError(.variable, context: "variable store", field: "StartId", offset: Int64(offset),
                                          reason: "0x\(String(startID, radix: 16)) is neither 0x55aa (a variable) nor 0xffff (free space)")
                }
                break
            }
            guard variables.count < limits.maximumVariables else {
                throw UEFIFormatError(.variable, context: "variable store", field: "variable count", offset: Int64(offset),
                                      reason: "more than \(limits.maximumVariables) variables")
            }
            guard storeEnd - offset >= headerBytes else {
                throw UEFIFormatError(.variable, context: "variable at 0x\(String(offset, radix: 16))", field: "header",
                                      offset: Int64(offset),
                                      reason: "needs \(headerBytes) bytes, the store ends after \(storeEnd - offset)")
            }
            let variable = try parseVariable(bytes, at: offset, storeEnd: storeEnd, authenticated: header.authenticated, limits: limits)
            variables.append(variable)
            // The next header starts at the next 4-byte boundary after the data.
            offset = align4(variable.dataOffset + variable.data.count)
            if offset > storeEnd { offset = storeEnd }
        }
        return VariableStore(volume: volume, header: header, variables: variables,
                             endOfVariables: min(variables.last.map { $0.dataOffset + $0.data.count } ?? offset, storeEnd))
    }

    static func align4(_ value: Int) -> Int { (value + 3) & ~3 }

    /// Runs a read of `ByteReader`, turning its error into a ``UEFIFormatError`` that keeps it.
    static func reading<T>(_ kind: UEFIFormatError.Kind, _ context: String,
                           _ body: () throws(ByteCodecError) -> T) throws(UEFIFormatError) -> T {
        do {
            return try body()
        } catch {
            throw UEFIFormatError(kind, context: context, field: error.field, offset: error.position,
                                  reason: error.reason, underlying: error)
        }
    }

    static func parseVolume(_ bytes: [UInt8]) throws(UEFIFormatError) -> FirmwareVolumeHeader {
        let context = "firmware volume header"
        func fail(_ field: String, _ offset: Int, _ reason: String) -> UEFIFormatError {
            UEFIFormatError(.firmwareVolume, context: context, field: field, offset: Int64(offset), reason: reason)
        }
        var reader = ByteReader(bytes, subject: context)
        let fixed = try reading(.firmwareVolume, context) { () throws(ByteCodecError) in
            (zero: try reader.take(16, "ZeroVector"),
             fileSystem: try reader.take(16, "FileSystemGuid"),
             length: try reader.read(UInt64.self, "FvLength", endianness: .little),
             signature: try reader.read(UInt32.self, "Signature", endianness: .little),
             attributes: try reader.read(UInt32.self, "Attributes", endianness: .little),
             headerLength: try reader.read(UInt16.self, "HeaderLength", endianness: .little),
             checksum: try reader.read(UInt16.self, "Checksum", endianness: .little),
             extended: try reader.read(UInt16.self, "ExtHeaderOffset", endianness: .little),
             reserved: try reader.u8("Reserved"),
             revision: try reader.u8("Revision"))
        }
        guard fixed.signature == firmwareVolumeSignature else {
            throw fail("Signature", 40, "not \"_FVH\": this is not a firmware volume (an OVMF VARS file starts with one)")
        }
        guard let fileSystem = EFIGUID(stored: fixed.fileSystem) else { throw fail("FileSystemGuid", 16, "not 16 bytes") }
        guard fileSystem == .systemNVDataFV else {
            throw fail("FileSystemGuid", 16, "\(fileSystem) is not the NV data volume GUID \(EFIGUID.systemNVDataFV)")
        }
        guard fixed.revision == 2 else { throw fail("Revision", 55, "revision \(fixed.revision), expected 2") }
        let headerLength = Int(fixed.headerLength)
        guard headerLength >= firmwareVolumeFixedHeader + 8, headerLength <= maximumFirmwareVolumeHeader,
              headerLength % 2 == 0 else {
            throw fail("HeaderLength", 48, "\(headerLength) is not an even length from \(firmwareVolumeFixedHeader + 8) to \(maximumFirmwareVolumeHeader)")
        }
        guard let volumeLength = Int(exactly: fixed.length), volumeLength <= bytes.count else {
            throw fail("FvLength", 32, "the volume claims \(fixed.length) bytes, the input has \(bytes.count)")
        }
        guard headerLength <= volumeLength else {
            throw fail("HeaderLength", 48, "\(headerLength) is past the volume's length \(volumeLength)")
        }
        // The header's 16-bit words sum to zero.
        var sum: UInt16 = 0
        for index in stride(from: 0, to: headerLength, by: 2) {
            sum &+= UInt16(bytes[index]) | UInt16(bytes[index + 1]) << 8
        }
        guard sum == 0 else {
            throw fail("Checksum", 50, "the header's 16-bit words sum to 0x\(String(sum, radix: 16)), not 0 (stored checksum 0x\(String(fixed.checksum, radix: 16)))")
        }
        // The block map: (NumBlocks, Length) pairs up to a (0, 0) entry, inside the header.
        var blocks: [FirmwareVolumeHeader.Block] = []
        var total: UInt64 = 0
        var mapReader = ByteReader(bytes, from: firmwareVolumeFixedHeader, to: headerLength, subject: "firmware volume block map")
        while true {
            let entryOffset = mapReader.offset
            let (count, length) = try reading(.firmwareVolume, "firmware volume block map") { () throws(ByteCodecError) in
                (try mapReader.read(UInt32.self, "NumBlocks", endianness: .little),
                 try mapReader.read(UInt32.self, "Length", endianness: .little))
            }
            if count == 0 && length == 0 { break }
            guard count != 0, length != 0 else {
                throw fail("BlockMap", entryOffset, "an entry of \(count) blocks of \(length) bytes (only the terminator may be zero)")
            }
            do {
                total = try Checked.add(total, try Checked.multiply(UInt64(count), UInt64(length), "block map size"), "block map size")
            } catch {
                throw UEFIFormatError(.firmwareVolume, context: context, field: "BlockMap", offset: Int64(entryOffset),
                                      reason: "the blocks' total size overflows", underlying: error)
            }
            blocks.append(.init(count: count, length: length))
        }
        guard total == fixed.length else {
            throw fail("BlockMap", firmwareVolumeFixedHeader, "the blocks cover \(total) bytes, the volume claims \(fixed.length)")
        }
        return FirmwareVolumeHeader(fileSystem: fileSystem, length: fixed.length, attributes: fixed.attributes,
                                    headerLength: fixed.headerLength, checksum: fixed.checksum,
                                    extendedHeaderOffset: fixed.extended, revision: fixed.revision, blockMap: blocks)
    }

    static func parseStoreHeader(_ bytes: [UInt8], volume: FirmwareVolumeHeader) throws(UEFIFormatError) -> VariableStoreHeader {
        let context = "variable store header"
        let start = Int(volume.headerLength)
        let volumeEnd = Int(volume.length)   // checked against the input in parseVolume
        func fail(_ field: String, _ offset: Int, _ reason: String) -> UEFIFormatError {
            UEFIFormatError(.variableStore, context: context, field: field, offset: Int64(offset), reason: reason)
        }
        var reader = ByteReader(bytes, from: start, to: volumeEnd, subject: context)
        let fields = try reading(.variableStore, context) { () throws(ByteCodecError) in
            (signature: try reader.take(16, "Signature"),
             size: try reader.read(UInt32.self, "Size", endianness: .little),
             format: try reader.u8("Format"),
             state: try reader.u8("State"),
             reserved: try reader.take(6, "Reserved"))
        }
        guard let signature = EFIGUID(stored: fields.signature) else { throw fail("Signature", start, "not 16 bytes") }
        guard signature == .authenticatedVariableStore || signature == .variableStore else {
            throw fail("Signature", start, "\(signature) is neither the authenticated variable store GUID \(EFIGUID.authenticatedVariableStore) nor the plain one \(EFIGUID.variableStore)")
        }
        let size = Int(fields.size)
        guard size >= storeHeaderBytes, size <= volumeEnd - start else {
            throw fail("Size", start + 16, "a store of \(size) bytes does not fit the \(volumeEnd - start) bytes after the volume header (minimum \(storeHeaderBytes))")
        }
        guard fields.format == formatted else {
            throw fail("Format", start + 20, "0x\(String(fields.format, radix: 16)), expected 0x5a (formatted)")
        }
        guard fields.state == healthy else {
            throw fail("State", start + 21, "0x\(String(fields.state, radix: 16)), expected 0xfe (healthy)")
        }
        return VariableStoreHeader(offset: start, signature: signature, size: fields.size, format: fields.format, state: fields.state)
    }

    static func parseVariable(_ bytes: [UInt8], at offset: Int, storeEnd: Int, authenticated: Bool,
                              limits: Limits) throws(UEFIFormatError) -> UEFIVariable {
        let context = "variable at 0x\(String(offset, radix: 16))"
        func fail(_ field: String, _ at: Int, _ reason: String) -> UEFIFormatError {
            UEFIFormatError(.variable, context: context, field: field, offset: Int64(at), reason: reason)
        }
        var reader = ByteReader(bytes, from: offset, to: storeEnd, subject: context)
        let header = try reading(.variable, context) { () throws(ByteCodecError) in
            let startID = try reader.read(UInt16.self, "StartId", endianness: .little)
            let state = try reader.u8("State")
            _ = try reader.u8("Reserved")
            let attributes = try reader.read(UInt32.self, "Attributes", endianness: .little)
            var monotonicCount: UInt64?, timestamp: EFITime?, publicKeyIndex: UInt32?
            if authenticated {
                monotonicCount = try reader.read(UInt64.self, "MonotonicCount", endianness: .little)
                let year = try reader.read(UInt16.self, "TimeStamp.Year", endianness: .little)
                let month = try reader.u8("TimeStamp.Month"), day = try reader.u8("TimeStamp.Day")
                let hour = try reader.u8("TimeStamp.Hour"), minute = try reader.u8("TimeStamp.Minute")
                let second = try reader.u8("TimeStamp.Second")
                _ = try reader.u8("TimeStamp.Pad1")
                let nanosecond = try reader.read(UInt32.self, "TimeStamp.Nanosecond", endianness: .little)
                let timeZone = try reader.read(Int16.self, "TimeStamp.TimeZone", endianness: .little)
                let daylight = try reader.u8("TimeStamp.Daylight")
                _ = try reader.u8("TimeStamp.Pad2")
                timestamp = EFITime(year: year, month: month, day: day, hour: hour, minute: minute, second: second,
                                    nanosecond: nanosecond, timeZone: timeZone, daylight: daylight)
                publicKeyIndex = try reader.read(UInt32.self, "PubKeyIndex", endianness: .little)
            }
            let nameSize = try reader.read(UInt32.self, "NameSize", endianness: .little)
            let dataSize = try reader.read(UInt32.self, "DataSize", endianness: .little)
            let vendor = try reader.take(16, "VendorGuid")
            return (startID: startID, state: state, attributes: attributes, monotonicCount: monotonicCount,
                    timestamp: timestamp, publicKeyIndex: publicKeyIndex, nameSize: nameSize, dataSize: dataSize, vendor: vendor)
        }
        guard header.startID == startID else {
            throw fail("StartId", offset, "0x\(String(header.startID, radix: 16)), expected 0x55aa")
        }
        let nameOffset = reader.offset
        let nameSizeField = offset + (authenticated ? 36 : 8)
        guard header.nameSize >= 2, header.nameSize % 2 == 0, Int(header.nameSize) <= limits.maximumNameBytes else {
            throw fail("NameSize", nameSizeField, "\(header.nameSize) is not an even size from 2 to \(limits.maximumNameBytes) bytes (UTF-16 with its NUL)")
        }
        guard Int(header.nameSize) <= storeEnd - nameOffset else {
            throw fail("NameSize", nameSizeField, "the name's \(header.nameSize) bytes run past the store's end at 0x\(String(storeEnd, radix: 16))")
        }
        let dataOffset = nameOffset + Int(header.nameSize)
        guard Int(header.dataSize) <= limits.maximumDataBytes else {
            throw fail("DataSize", nameSizeField + 4, "\(header.dataSize) bytes is over the limit of \(limits.maximumDataBytes)")
        }
        guard Int(header.dataSize) <= storeEnd - dataOffset else {
            throw fail("DataSize", nameSizeField + 4, "the data's \(header.dataSize) bytes at 0x\(String(dataOffset, radix: 16)) run past the store's end at 0x\(String(storeEnd, radix: 16))")
        }
        // UTF-16LE code units, the last one NUL.
        var units: [UInt16] = []
        units.reserveCapacity(Int(header.nameSize) / 2)
        for index in stride(from: nameOffset, to: dataOffset, by: 2) {
            units.append(UInt16(bytes[index]) | UInt16(bytes[index + 1]) << 8)
        }
        guard units.last == 0 else { throw fail("Name", dataOffset - 2, "the name does not end with a NUL character") }
        units.removeLast()
        guard let vendor = EFIGUID(stored: header.vendor) else { throw fail("VendorGuid", nameOffset - 16, "not 16 bytes") }
        return UEFIVariable(offset: offset, state: header.state, attributes: VariableAttributes(rawValue: header.attributes),
                            monotonicCount: header.monotonicCount, timestamp: header.timestamp,
                            publicKeyIndex: header.publicKeyIndex, name: String(decoding: units, as: UTF16.self),
                            vendor: vendor, dataOffset: dataOffset,
                            data: Array(bytes[dataOffset..<(dataOffset + Int(header.dataSize))]))
    }
}
