import GuestVaultCore

// MARK: - Requests

/// One decoded control-channel request, with its payload fields as swtpm reads them.
public enum ControlRequest: Sendable, Hashable {
    /// CMD_GET_CAPABILITY: no payload.
    case getCapability
    /// CMD_INIT: the init flags.
    case initialize(flags: PTMInitFlags)
    /// CMD_SHUTDOWN: no payload. swtpm stops the TPM, replies, then exits.
    case shutdown
    /// CMD_GET_TPMESTABLISHED: no payload.
    case getTPMEstablished
    /// CMD_SET_LOCALITY: the locality for the following TPM commands (valid 0...4).
    case setLocality(UInt8)
    /// CMD_HASH_START: no payload.
    case hashStart
    /// CMD_HASH_DATA: the data to hash (at most `ControlChannelLimits.maximumHashData`).
    case hashData([UInt8])
    /// CMD_HASH_END: no payload.
    case hashEnd
    /// CMD_CANCEL_TPM_CMD: no payload.
    case cancelTPMCommand
    /// CMD_STORE_VOLATILE: no payload.
    case storeVolatile
    /// CMD_RESET_TPMESTABLISHED: the locality to reset from (valid 0...4).
    case resetTPMEstablished(locality: UInt8)
    /// CMD_GET_STATEBLOB: which blob, its flags, and the offset to start from.
    case getStateBlob(type: PTMBlobType, flags: PTMStateFlags, offset: UInt32)
    /// CMD_SET_STATEBLOB: which blob, its flags, and the whole blob.
    case setStateBlob(type: PTMBlobType, flags: PTMStateFlags, blob: [UInt8])
    /// CMD_STOP: no payload.
    case stop
    /// CMD_GET_CONFIG: no payload.
    case getConfig
    /// CMD_SET_DATAFD: no payload; the data channel's file descriptor travels beside the
    /// message as SCM_RIGHTS ancillary data, which the server reads with recvmsg.
    case setDataFD
    /// CMD_SET_BUFFERSIZE: the wanted buffer size; 0 only asks for the current one.
    case setBufferSize(UInt32)
    /// CMD_GET_INFO: which information, and the offset into its text.
    case getInfo(flags: PTMInfoFlags, offset: UInt32)
    /// CMD_LOCK_STORAGE (swtpm 0.8+): how many times to retry taking the state lock.
    case lockStorage(retries: UInt32)

    /// The command this request carries.
    public var command: ControlCommand {
        switch self {
        case .getCapability: .getCapability
        case .initialize: .initialize
        case .shutdown: .shutdown
        case .getTPMEstablished: .getTPMEstablished
        case .setLocality: .setLocality
        case .hashStart: .hashStart
        case .hashData: .hashData
        case .hashEnd: .hashEnd
        case .cancelTPMCommand: .cancelTPMCommand
        case .storeVolatile: .storeVolatile
        case .resetTPMEstablished: .resetTPMEstablished
        case .getStateBlob: .getStateBlob
        case .setStateBlob: .setStateBlob
        case .stop: .stop
        case .getConfig: .getConfig
        case .setDataFD: .setDataFD
        case .setBufferSize: .setBufferSize
        case .getInfo: .getInfo
        case .lockStorage: .lockStorage
        }
    }

    /// The request as a client writes it, in its shortest form (as swtpm_ioctl and tpm2-tss
    /// send it; QEMU pads SET_LOCALITY and RESET_TPMESTABLISHED to four payload bytes).
    public func encoded() -> [UInt8] {
        var out = ByteWriter()
        out.u32(command.rawValue)
        switch self {
        case .getCapability, .shutdown, .getTPMEstablished, .hashStart, .hashEnd,
             .cancelTPMCommand, .storeVolatile, .stop, .getConfig, .setDataFD:
            break
        case .initialize(let flags):
            out.write(flags.rawValue)
        case .setLocality(let locality):
            out.u8(locality)
        case .hashData(let data):
            out.u32(UInt32(truncatingIfNeeded: data.count))
            out.raw(data)
        case .resetTPMEstablished(let locality):
            out.u8(locality)
        case .getStateBlob(let type, let flags, let offset):
            out.write(flags.rawValue)
            out.write(type.rawValue)
            out.write(offset)
        case .setStateBlob(let type, let flags, let blob):
            out.write(flags.rawValue)
            out.write(type.rawValue)
            out.u32(UInt32(truncatingIfNeeded: blob.count))
            out.raw(blob)
        case .setBufferSize(let size):
            out.write(size)
        case .getInfo(let flags, let offset):
            out.write(flags.rawValue)
            out.write(offset)
            out.u32(0)
        case .lockStorage(let retries):
            out.write(retries)
        }
        return out.bytes
    }
}
