import GuestVaultCore

import GuestVaultCore

// The messages of swtpm's control channel, as swtpm 0.7 speaks it over a stream socket
// (Unix or TCP). The layout follows swtpm's `include/swtpm/tpm_ioctl.h`; on a socket every
// integer field is big-endian. docs/SWTPM-PROTOCOL.md describes every message byte by byte.

// MARK: - Command codes

/// The command codes of swtpm's control channel (`CMD_*` in `tpm_ioctl.h`). On the wire a
/// request starts with this code as a big-endian u32.
public enum ControlCommand: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case getCapability = 0x01
    case initialize = 0x02
    case shutdown = 0x03
    case getTPMEstablished = 0x04
    case setLocality = 0x05
    case hashStart = 0x06
    case hashData = 0x07
    case hashEnd = 0x08
    case cancelTPMCommand = 0x09
    case storeVolatile = 0x0a
    case resetTPMEstablished = 0x0b
    case getStateBlob = 0x0c
    case setStateBlob = 0x0d
    case stop = 0x0e
    case getConfig = 0x0f
    case setDataFD = 0x10
    case setBufferSize = 0x11
    case getInfo = 0x12
    /// Added in swtpm 0.8; swtpm 0.7 answers it as an unknown command (TPM_BAD_ORDINAL).
    case lockStorage = 0x13

    /// swtpm's name for the command, for logs and errors.
    public var name: String {
        switch self {
        case .getCapability: "CMD_GET_CAPABILITY"
        case .initialize: "CMD_INIT"
        case .shutdown: "CMD_SHUTDOWN"
        case .getTPMEstablished: "CMD_GET_TPMESTABLISHED"
        case .setLocality: "CMD_SET_LOCALITY"
        case .hashStart: "CMD_HASH_START"
        case .hashData: "CMD_HASH_DATA"
        case .hashEnd: "CMD_HASH_END"
        case .cancelTPMCommand: "CMD_CANCEL_TPM_CMD"
        case .storeVolatile: "CMD_STORE_VOLATILE"
        case .resetTPMEstablished: "CMD_RESET_TPMESTABLISHED"
        case .getStateBlob: "CMD_GET_STATEBLOB"
        case .setStateBlob: "CMD_SET_STATEBLOB"
        case .stop: "CMD_STOP"
        case .getConfig: "CMD_GET_CONFIG"
        case .setDataFD: "CMD_SET_DATAFD"
        case .setBufferSize: "CMD_SET_BUFFERSIZE"
        case .getInfo: "CMD_GET_INFO"
        case .lockStorage: "CMD_LOCK_STORAGE"
        }
    }

    public var description: String { "\(name) (\(SWTPMText.hex(rawValue)))" }
}

// MARK: - Result codes

/// The u32 result that starts almost every control-channel reply (`ptm_res`). The values are
/// TPM 1.2 result codes, as swtpm uses them for both TPM versions.
public struct PTMResult: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// TPM_SUCCESS.
    public static let success = PTMResult(rawValue: 0x00)
    /// TPM_BAD_PARAMETER: a malformed request (wrong length, offset out of range).
    public static let badParameter = PTMResult(rawValue: 0x03)
    /// TPM_FAIL: the operation failed (swtpm 0.8+ also sends it for an oversized state blob).
    public static let fail = PTMResult(rawValue: 0x09)
    /// TPM_BAD_ORDINAL: unknown command, or a command not allowed in the TPM's current
    /// state (for example SET_STATEBLOB while the TPM runs, GET_STATEBLOB while it is stopped).
    public static let badOrdinal = PTMResult(rawValue: 0x0a)
    /// TPM_KEYNOTFOUND: a state blob is encrypted with a migration key this side lacks
    /// (swtpm's answer too).
    public static let keyNotFound = PTMResult(rawValue: 0x0d)
    /// TPM_SIZE: swtpm sends it when GET_INFO cannot allocate its answer.
    public static let size = PTMResult(rawValue: 0x17)
    /// TPM_IOERROR: SET_DATAFD when a data channel is already attached, or a broken read.
    public static let ioError = PTMResult(rawValue: 0x1f)
    /// TPM_BAD_LOCALITY: SET_LOCALITY or RESET_TPMESTABLISHED with a locality above 4.
    public static let badLocality = PTMResult(rawValue: 0x3d)
    /// TPM_RETRY: GET_STATEBLOB of a blob that does not exist (typically the save state).
    public static let retry = PTMResult(rawValue: 0x800)

    /// The TPM_NON_FATAL bit (0x800). QEMU accepts a GET_STATEBLOB reply with this bit set
    /// as "no such blob" rather than as a failure.
    public var isNonFatal: Bool { rawValue & 0x800 != 0 }

    public var description: String {
        switch self {
        case .success: "TPM_SUCCESS"
        case .badParameter: "TPM_BAD_PARAMETER"
        case .fail: "TPM_FAIL"
        case .keyNotFound: "TPM_KEYNOTFOUND"
        case .badOrdinal: "TPM_BAD_ORDINAL"
        case .size: "TPM_SIZE"
        case .ioError: "TPM_IOERROR"
        case .badLocality: "TPM_BAD_LOCALITY"
        case .retry: "TPM_RETRY"
        default: SWTPMText.hex(rawValue)
        }
    }
}

// MARK: - Flags and constants

/// The capability bits of the GET_CAPABILITY reply (`PTM_CAP_*`).
public struct PTMCapabilities: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let initialize = PTMCapabilities(rawValue: 1 << 0)
    public static let shutdown = PTMCapabilities(rawValue: 1 << 1)
    public static let getTPMEstablished = PTMCapabilities(rawValue: 1 << 2)
    public static let setLocality = PTMCapabilities(rawValue: 1 << 3)
    public static let hashing = PTMCapabilities(rawValue: 1 << 4)
    public static let cancelTPMCommand = PTMCapabilities(rawValue: 1 << 5)
    public static let storeVolatile = PTMCapabilities(rawValue: 1 << 6)
    public static let resetTPMEstablished = PTMCapabilities(rawValue: 1 << 7)
    public static let getStateBlob = PTMCapabilities(rawValue: 1 << 8)
    public static let setStateBlob = PTMCapabilities(rawValue: 1 << 9)
    public static let stop = PTMCapabilities(rawValue: 1 << 10)
    public static let getConfig = PTMCapabilities(rawValue: 1 << 11)
    public static let setDataFD = PTMCapabilities(rawValue: 1 << 12)
    public static let setBufferSize = PTMCapabilities(rawValue: 1 << 13)
    public static let getInfo = PTMCapabilities(rawValue: 1 << 14)
    /// The data channel accepts the MSSIM-style TPM_SEND_COMMAND prefix (TPM 2 only).
    public static let sendCommandHeader = PTMCapabilities(rawValue: 1 << 15)
    /// CMD_LOCK_STORAGE (swtpm 0.8+). QEMU 8.0+ sends it after a failed migration when
    /// this bit is set; QEMU 7.2 never sends it.
    public static let lockStorage = PTMCapabilities(rawValue: 1 << 16)

    /// Exactly what swtpm 0.7.1 reports for a TPM 2.0 on a socket: every bit from INIT to
    /// SEND_COMMAND_HEADER, 0xFFFF.
    /// What `guestvault serve` reports: swtpm 0.7.1's bits and LOCK_STORAGE (bit 16), as
    /// swtpm 0.8 and later do (0x1ffff).
    public static let guestvaultServe: PTMCapabilities = swtpm071TPM2.union(.lockStorage)

    public static let swtpm071TPM2: PTMCapabilities = [
        .initialize, .shutdown, .getTPMEstablished, .setLocality, .hashing, .cancelTPMCommand,
        .storeVolatile, .resetTPMEstablished, .getStateBlob, .setStateBlob, .stop, .getConfig,
        .setDataFD, .setBufferSize, .getInfo, .sendCommandHeader,
    ]

    /// The capabilities QEMU requires of a TPM 2.0 emulator; it refuses to start without them.
    public static let qemuRequiredTPM2: PTMCapabilities = [
        .initialize, .shutdown, .getTPMEstablished, .setLocality, .resetTPMEstablished,
        .setDataFD, .stop, .setBufferSize,
    ]

    /// The capabilities without which QEMU blocks migration.
    public static let qemuMigration: PTMCapabilities = [.getStateBlob, .setStateBlob, .stop]
}

/// The flags of CMD_INIT (`PTM_INIT_FLAG_*`).
public struct PTMInitFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Delete the volatile state after reading it. QEMU sets it when resuming after an
    /// incoming migration; swtpm_ioctl `-i` and the tpm2-tss reset set it too.
    public static let deleteVolatile = PTMInitFlags(rawValue: 1 << 0)
}

/// The state-blob flags of GET_STATEBLOB and SET_STATEBLOB (`PTM_STATE_FLAG_*`).
public struct PTMStateFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// In a GET_STATEBLOB request: return the blob decrypted from the state-file key. (A
    /// migration key, if configured, still applies.) QEMU and swtpm_ioctl always set it.
    public static let decrypted = PTMStateFlags(rawValue: 1)
    /// In a GET_STATEBLOB reply or a SET_STATEBLOB request: the blob is encrypted.
    public static let encrypted = PTMStateFlags(rawValue: 2)
}

/// Which state blob a GET_STATEBLOB or SET_STATEBLOB is about (`PTM_BLOB_TYPE_*`). Other
/// values can arrive on the wire; the decoder passes them on and the server refuses them.
public struct PTMBlobType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The permanent state (swtpm's `tpm2-00.permall`).
    public static let permanent = PTMBlobType(rawValue: 1)
    /// The volatile state (`tpm2-00.volatilestate`).
    public static let volatile = PTMBlobType(rawValue: 2)
    /// The save state of TPM2_Shutdown(STATE) (`tpm2-00.savestate`).
    public static let savestate = PTMBlobType(rawValue: 3)

    /// One of the three types swtpm knows.
    public var isKnown: Bool { (1...3).contains(rawValue) }

    public var description: String {
        switch self {
        case .permanent: "permanent"
        case .volatile: "volatile"
        case .savestate: "savestate"
        default: "unknown blob type \(rawValue)"
        }
    }
}

/// The flags of the GET_CONFIG reply (`PTM_CONFIG_FLAG_*`).
public struct PTMConfigFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The state files are encrypted with a key (`--key`).
    public static let fileKey = PTMConfigFlags(rawValue: 0x1)
    /// State blobs leave the TPM encrypted with a migration key (`--migration-key`).
    public static let migrationKey = PTMConfigFlags(rawValue: 0x2)
}

/// The flags of a GET_INFO request (`SWTPM_INFO_*`), passed through to libtpms'
/// `TPMLIB_GetInfo`.
public struct PTMInfoFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `{"TPMSpecification":{"family":"2.0","level":0,"revision":164}}` with libtpms 0.9.
    public static let tpmSpecification = PTMInfoFlags(rawValue: 1 << 0)
    /// `{"TPMAttributes":{"manufacturer":"id:00001014","version":"id:20191023","model":"swtpm"}}`.
    public static let tpmAttributes = PTMInfoFlags(rawValue: 1 << 1)
    // Defined by later swtpm and libtpms versions, not by swtpm 0.7:
    public static let tpmFeatures = PTMInfoFlags(rawValue: 1 << 2)
    public static let runtimeAlgorithms = PTMInfoFlags(rawValue: 1 << 3)
    public static let runtimeCommands = PTMInfoFlags(rawValue: 1 << 4)
    public static let activeProfile = PTMInfoFlags(rawValue: 1 << 5)
    public static let availableProfiles = PTMInfoFlags(rawValue: 1 << 6)
    public static let runtimeAttributes = PTMInfoFlags(rawValue: 1 << 7)
}

/// Sizes that shape the control channel.
public enum ControlChannelLimits {
    /// The data field of swtpm's `ptm_hdata`: the most HASH_DATA carries in one message.
    /// swtpm_ioctl cuts longer input into messages of at most this size.
    public static let maximumHashData = 4096
    /// The most GET_INFO returns in one reply (`PTM_GETINFO_SIZE`, 3 KiB); a client asks again
    /// with an offset for the rest.
    public static let maximumInfoChunk = 3 * 1024
    /// The length of the GET_STATEBLOB reply header (result, flags, total length, length).
    public static let stateBlobReplyHeader = 16
    /// The length of the SET_STATEBLOB request header after the command code.
    public static let setStateBlobHeader = 12
}

// MARK: - Text

/// How numbers of the swtpm protocol appear in messages.
enum SWTPMText {
    /// `0x0000000a` style.
    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// Bytes as lowercase hex (ids, never key material).
    static func hexString(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
