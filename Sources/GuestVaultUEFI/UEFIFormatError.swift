public import GuestVaultCore

extension ErrorCode {
    /// The firmware volume header around a variable store is wrong (signature, length,
    /// block map, checksum).
    public static let uefiFirmwareVolume = ErrorCode("uefiFirmwareVolume", .integrity)
    /// The variable store header is wrong (GUID, size, format, state).
    public static let uefiVariableStore = ErrorCode("uefiVariableStore", .integrity)
    /// A variable header, name or data is wrong or points outside the store.
    public static let uefiVariable = ErrorCode("uefiVariable", .integrity)
    /// An EFI_SIGNATURE_LIST (PK, KEK, db, dbx) is wrong.
    public static let uefiSignatureList = ErrorCode("uefiSignatureList", .integrity)
    /// An X.509 certificate in a signature list does not parse far enough for its subject.
    public static let uefiCertificate = ErrorCode("uefiCertificate", .integrity)
}

/// A variable store (or a structure in it) that is not what it claims to be. Every error
/// names the structure, the field and its absolute byte offset in the input; a failure of
/// the byte reader or of checked arithmetic underneath stays in ``underlying``.
public struct UEFIFormatError: GuestVaultError {
    public enum Kind: Sendable, Hashable {
        case firmwareVolume, variableStore, variable, signatureList, certificate
    }

    public let kind: Kind
    /// The absolute offset in the input (or in the variable's data, for signature lists
    /// and certificates: see ``context``) where the problem was found.
    public let offset: Int64
    /// The field that is wrong ("HeaderLength", "NameSize").
    public let field: String
    public let reason: String
    /// What was being read, for messages: "variable store", "variable at 0x3cf4 (db)".
    public let context: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ kind: Kind, context: String, field: String, offset: Int64, reason: String,
                underlying: (any Error & Sendable)? = nil, file: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.context = context
        self.field = field
        self.offset = offset
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    public var code: ErrorCode {
        switch kind {
        case .firmwareVolume: .uefiFirmwareVolume
        case .variableStore: .uefiVariableStore
        case .variable: .uefiVariable
        case .signatureList: .uefiSignatureList
        case .certificate: .uefiCertificate
        }
    }

    public var message: String {
        "UEFI \(context) at offset 0x\(String(offset, radix: 16)) (\(offset)): \(field): \(reason)"
    }
}
