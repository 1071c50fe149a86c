/// An EFI_GUID as it is stored: a little-endian u32, two little-endian u16s, then eight
/// bytes in order. Its text form is the usual lower-case 8-4-4-4-12.
public struct EFIGUID: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The 16 bytes as stored in the file.
    public let bytes: [UInt8]

    /// From the 16 stored bytes; nil for any other count.
    public init?<Bytes: Collection>(stored: Bytes) where Bytes.Element == UInt8 {
        guard stored.count == 16 else { return nil }
        bytes = Array(stored)
    }

    /// From the text form ("8be4df61-93ca-11d2-aa0d-00e098032b8c"); nil if it is not one.
    public init?(_ text: String) {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        var hex: [UInt8] = []
        for group in groups {
            var chars = Array(group.utf8)[...]
            while chars.count >= 2 {
                guard let high = Self.nibble(chars[chars.startIndex]), let low = Self.nibble(chars[chars.startIndex + 1]) else { return nil }
                hex.append(high << 4 | low)
                chars = chars.dropFirst(2)
            }
        }
        guard hex.count == 16 else { return nil }
        // Data1, Data2 and Data3 are little-endian in storage.
        bytes = [hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6]] + hex[8..<16]
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    public var description: String {
        func hex(_ slice: some Collection<UInt8>) -> String {
            slice.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
        return "\(hex(bytes[0..<4].reversed()))-\(hex(bytes[4..<6].reversed()))-\(hex(bytes[6..<8].reversed()))-\(hex(bytes[8..<10]))-\(hex(bytes[10..<16]))"
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let guid = EFIGUID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a GUID: \(text)"))
        }
        self = guid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func known(_ text: String) -> EFIGUID {
        guard let guid = EFIGUID(text) else { preconditionFailure("bad GUID literal \(text)") }
        return guid
    }

    // MARK: Well-known GUIDs

    /// EFI_SYSTEM_NV_DATA_FV_GUID: the file system GUID of a firmware volume that holds
    /// variables.
    public static let systemNVDataFV = known("fff12b8d-7696-4c8b-a985-2747075b4f50")
    /// gEfiAuthenticatedVariableGuid: a variable store of authenticated variable headers.
    public static let authenticatedVariableStore = known("aaf32c78-947b-439a-a180-2e144ec37792")
    /// gEfiVariableGuid: a variable store of plain variable headers.
    public static let variableStore = known("ddcf3616-3275-4164-98b6-fe85707ffe7d")
    /// EFI_GLOBAL_VARIABLE: SecureBoot, SetupMode, PK, KEK, Boot####, ...
    public static let globalVariable = known("8be4df61-93ca-11d2-aa0d-00e098032b8c")
    /// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx, dbt, dbr.
    public static let imageSecurityDatabase = known("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    /// EDK2's SecureBootEnable (the OVMF setup switch).
    public static let secureBootEnableDisable = known("f0a30bc7-af08-4556-99c4-001009c93a44")
    /// EDK2's CustomMode.
    public static let customMode = known("c076ec0c-7028-4399-a072-71ee5c448b9f")

    /// EFI_CERT_X509_GUID: one DER certificate per signature.
    public static let certX509 = known("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
    /// EFI_CERT_SHA256_GUID: one SHA-256 digest per signature.
    public static let certSHA256 = known("c1c41626-504c-4092-aca9-41f936934328")
    public static let certSHA1 = known("826ca512-cf10-4ac9-b187-be01496631bd")
    public static let certSHA224 = known("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd")
    public static let certSHA384 = known("ff3e5307-9fd0-48c9-85f1-8ad56c701e01")
    public static let certSHA512 = known("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a")
    public static let certRSA2048 = known("3c5766e8-269c-4e34-aa14-ed776e85b3b6")
    public static let certRSA2048SHA256 = known("e2b36190-879b-4a3d-ad8d-f2e7bba32784")
    public static let certRSA2048SHA1 = known("67f8444f-8743-48f1-a328-1eaab8736080")
    public static let certX509SHA256 = known("3bd2a492-96c0-4079-b420-fcf98ef103ed")
    public static let certX509SHA384 = known("7076876e-80c2-4ee6-aad2-28b349a6865b")
    public static let certX509SHA512 = known("446dbf63-2502-4cda-bcfa-2465d2b0fe9d")
}
