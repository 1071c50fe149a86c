import Foundation

extension TPMServer {
    /// Carries out one control command and returns the reply's bytes.
    func handle(_ message: ControlMessage, connection: Connection) -> [UInt8] {
        do {
            switch message {
            case .getCapability:
                var w = TPMWriter()
                w.u32(UInt32(ControlReply.capabilities >> 32))
                w.u32(UInt32(ControlReply.capabilities & 0xffff_ffff))
                return w.bytes
            case .initialize(let flags):
                try startTPM(deleteVolatile: flags & 1 != 0)
                return ControlReply.result(ControlReply.success)
            case .shutdown:
                if let engine { try engine.stop() }
                engine = nil
                shutdownRequested = true
                return ControlReply.result(ControlReply.success)
            case .getTPMEstablished:
                let bit = try engine?.establishedBit() ?? false
                return ControlReply.result(ControlReply.success) + [bit ? 1 : 0, 0, 0, 0]
            case .setLocality(let value):
                guard value <= 4 else { return ControlReply.result(ControlReply.badLocality) }
                locality = value
                return ControlReply.result(ControlReply.success)
            case .hashStart:
                try requireEngine().hashStart()
                return ControlReply.result(ControlReply.success)
            case .hashData(let bytes):
                try requireEngine().hashData(bytes)
                return ControlReply.result(ControlReply.success)
            case .hashEnd:
                try requireEngine().hashEnd()
                return ControlReply.result(ControlReply.success)
            case .cancelTPMCommand:
                engine?.cancel()
                return ControlReply.result(ControlReply.success)
            case .storeVolatile:
                try requireEngine().storeVolatile()
                return ControlReply.result(ControlReply.success)
            case .resetTPMEstablished(let requested):
                let value = requested > 4 ? locality : requested
                guard value >= 3 else { return ControlReply.result(ControlReply.badLocality) }
                try requireEngine().resetEstablishedBit(locality: value)
                return ControlReply.result(ControlReply.success)
            case .getStateBlob(_, let type, let offset):
                guard let blob = Self.blob(type) else { return ControlReply.result(ControlReply.badParameter) }
                let state: [UInt8]?
                if let engine { state = try engine.state(blob) } else { state = try storage.load(blob) }
                let data = state.map(StateBlobEnvelope.wrap) ?? []
                let start = min(Int(offset), data.count)
                var w = TPMWriter()
                w.u32(ControlReply.success)
                w.u32(0)                                // state flags: not encrypted
                w.u32(UInt32(data.count))               // total length
                w.u32(UInt32(data.count - start))       // length of what follows
                w.raw(Array(data[start...]))
                return w.bytes
            case .setStateBlob(_, let type, let bytes):
                guard let blob = Self.blob(type) else { return ControlReply.result(ControlReply.badParameter) }
                guard engine == nil else { return ControlReply.result(ControlReply.badOrdinal) }   // only while stopped
                let data = try StateBlobEnvelope.unwrap(bytes)
                if data.isEmpty { try storage.delete(blob) } else { try storage.store(blob, data) }
                return ControlReply.result(ControlReply.success)
            case .stop:
                if let engine { try engine.stop(storeVolatile: true) }
                engine = nil
                return ControlReply.result(ControlReply.success)
            case .getConfig:
                return ControlReply.result(ControlReply.success) + [0, 0, 0, 0]
            case .setDataFD:
                guard let descriptor = connection.pendingDescriptor else { return ControlReply.result(ControlReply.fail) }
                connection.pendingDescriptor = nil
                adoptDataDescriptor(descriptor)
                return ControlReply.result(ControlReply.success)
            case .setBufferSize(let wanted):
                if wanted != 0 && engine != nil { return ControlReply.result(ControlReply.badOrdinal) }
                let sizes = TPMEngine.setBufferSize(wanted)
                if wanted != 0 { bufferSize = sizes.size }
                var w = TPMWriter()
                w.u32(ControlReply.success)
                w.u32(sizes.size)
                w.u32(sizes.min)
                w.u32(sizes.max)
                return w.bytes
            case .getInfo(let flags, let offset):
                let text = Array(TPMEngine.info(flags: UInt32(truncatingIfNeeded: flags)).utf8)
                let start = min(Int(offset), text.count)
                var w = TPMWriter()
                w.u32(ControlReply.success)
                w.u32(UInt32(text.count))
                w.u32(UInt32(text.count - start))
                w.raw(Array(text[start...]))
                return w.bytes
            case .lockStorage:
                // The container is locked for this process from the start.
                return ControlReply.result(ControlReply.success)
            }
        } catch {
            log("control command \(message.name) failed: \(error)")
            return ControlReply.result(ControlReply.fail)
        }
    }

    private func requireEngine() throws -> TPMEngine {
        guard let engine else { throw TPMEngineError(.notRunning, "the TPM is not initialised (send CMD_INIT)") }
        return engine
    }

    static func blob(_ type: UInt32) -> TPMStateBlob? {
        switch type {
        case 1: .permanent
        case 2: .volatile
        case 3: .saveState
        default: nil
        }
    }
}

extension ControlMessage {
    var name: String {
        switch self {
        case .getCapability: "GET_CAPABILITY"
        case .initialize: "INIT"
        case .shutdown: "SHUTDOWN"
        case .getTPMEstablished: "GET_TPMESTABLISHED"
        case .setLocality: "SET_LOCALITY"
        case .hashStart: "HASH_START"
        case .hashData: "HASH_DATA"
        case .hashEnd: "HASH_END"
        case .cancelTPMCommand: "CANCEL_TPM_CMD"
        case .storeVolatile: "STORE_VOLATILE"
        case .resetTPMEstablished: "RESET_TPMESTABLISHED"
        case .getStateBlob: "GET_STATEBLOB"
        case .setStateBlob: "SET_STATEBLOB"
        case .stop: "STOP"
        case .getConfig: "GET_CONFIG"
        case .setDataFD: "SET_DATAFD"
        case .setBufferSize: "SET_BUFFERSIZE"
        case .getInfo: "GET_INFO"
        case .lockStorage: "LOCK_STORAGE"
        }
    }
}
