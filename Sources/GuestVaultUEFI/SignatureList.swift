import GuestVaultCore

/// One EFI_SIGNATURE_LIST of a signature database (PK, KEK, db, dbx): a type, and
/// signatures of one size, each an owner GUID and the signature data.
public struct SignatureList: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public let owner: EFIGUID
        public let data: [UInt8]
    }

    /// Offset of the list in the variable's data.
    public let offset: Int
    public let type: EFIGUID
    public let header: [UInt8]
    public let signatureSize: UInt32
    public let entries: [Entry]

    /// A short name of the signature type ("x509", "sha256"), or the GUID.
    public var typeName: String { Self.typeName(type) }

    public static func typeName(_ type: EFIGUID) -> String {
        switch type {
        case .certX509: "x509"
        case .certSHA256: "sha256"
        case .certSHA1: "sha1"
        case .certSHA224: "sha224"
        case .certSHA384: "sha384"
        case .certSHA512: "sha512"
        case .certRSA2048: "rsa2048"
        case .certRSA2048SHA256: "rsa2048-sha256"
        case .certRSA2048SHA1: "rsa2048-sha1"
        case .certX509SHA256: "x509-sha256"
        case .certX509SHA384: "x509-sha384"
        case .certX509SHA512: "x509-sha512"
        default: type.description
        }
    }

    /// The data size a signature of this type must have (nil: any size, as for X.509).
    static func fixedDataSize(_ type: EFIGUID) -> Int? {
        switch type {
        case .certSHA256: 32
        case .certSHA1: 20
        case .certSHA224: 28
        case .certSHA384: 48
        case .certSHA512: 64
        case .certRSA2048: 256
        case .certRSA2048SHA256: 32
        case .certRSA2048SHA1: 20
        case .certX509SHA256: 48
        case .certX509SHA384: 64
        case .certX509SHA512: 80
        default: nil
        }
    }

    static let fixedBytes = 28
    static let ownerBytes = 16
    /// The most signatures read from one variable (Microsoft's dbx has a few hundred).
    public static let maximumSignatures = 65_536

    /// Parses the data of a signature database variable: zero or more lists, back to
    /// back, filling it exactly. `context` names the variable in errors ("db at 0x3cf4");
    /// offsets in errors are `base` plus the offset in `data`.
    public static func parseAll(_ data: [UInt8], base: Int = 0, context: String) throws(UEFIFormatError) -> [SignatureList] {
        var lists: [SignatureList] = []
        var offset = 0
        var signatures = 0
        func fail(_ field: String, _ at: Int, _ reason: String) -> UEFIFormatError {
            UEFIFormatError(.signatureList, context: context, field: field, offset: Int64(base) + Int64(at), reason: reason)
        }
        while offset < data.count {
            var reader = ByteReader(data, from: offset, base: Int64(base), subject: context)
            let fixed = try VariableStore.reading(.signatureList, context) { () throws(ByteCodecError) in
                (type: try reader.take(16, "SignatureType"),
                 listSize: try reader.read(UInt32.self, "SignatureListSize", endianness: .little),
                 headerSize: try reader.read(UInt32.self, "SignatureHeaderSize", endianness: .little),
                 signatureSize: try reader.read(UInt32.self, "SignatureSize", endianness: .little))
            }
            guard let type = EFIGUID(stored: fixed.type) else { throw fail("SignatureType", offset, "not 16 bytes") }
            let listSize = Int(fixed.listSize), headerSize = Int(fixed.headerSize), signatureSize = Int(fixed.signatureSize)
            guard listSize >= fixedBytes, listSize <= data.count - offset else {
                throw fail("SignatureListSize", offset + 16, "\(listSize) bytes does not fit the \(data.count - offset) bytes left (minimum \(fixedBytes))")
            }
            guard headerSize <= listSize - fixedBytes else {
                throw fail("SignatureHeaderSize", offset + 20, "\(headerSize) bytes does not fit the list of \(listSize)")
            }
            let body = listSize - fixedBytes - headerSize
            guard signatureSize > ownerBytes, body % signatureSize == 0 else {
                throw fail("SignatureSize", offset + 24, "\(signatureSize) bytes (owner GUID and data) does not divide the \(body) bytes of signatures")
            }
            if let expected = fixedDataSize(type), signatureSize - ownerBytes != expected {
                throw fail("SignatureSize", offset + 24, "a \(typeName(type)) signature has \(expected) bytes of data, the list says \(signatureSize - ownerBytes)")
            }
            let count = body / signatureSize
            guard count <= maximumSignatures - signatures else {
                throw fail("SignatureListSize", offset + 16, "more than \(maximumSignatures) signatures")
            }
            signatures += count
            let headerStart = offset + fixedBytes
            var entries: [SignatureList.Entry] = []
            entries.reserveCapacity(count)
            var at = headerStart + headerSize
            for _ in 0..<count {
                guard let owner = EFIGUID(stored: data[at..<(at + ownerBytes)]) else { throw fail("SignatureOwner", at, "not 16 bytes") }
                entries.append(.init(owner: owner, data: Array(data[(at + ownerBytes)..<(at + signatureSize)])))
                at += signatureSize
            }
            lists.append(SignatureList(offset: offset, type: type, header: Array(data[headerStart..<(headerStart + headerSize)]),
                                       signatureSize: fixed.signatureSize, entries: entries))
            offset += listSize
        }
        return lists
    }
}
