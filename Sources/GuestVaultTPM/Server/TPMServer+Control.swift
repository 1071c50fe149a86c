import Foundation
import GuestVaultCore

extension TPMServer {
    /// Carries out one control command the way swtpm 0.7.1 does (docs/SWTPM-PROTOCOL.md).
    func handle(_ request: ControlRequest, connection: Connection) -> ControlResponse {
        do {
            switch request {
            case .getCapability:
                return .capabilities(.swtpm071TPM2)
            case .initialize(let flags):
                try startTPM(flags.contains(.deleteVolatile) ? .resumeOnce : .discard)
                return .result(.success)
            case .shutdown:
                if let engine { try engine.stop() }
                engine = nil
                shutdownRequested = true
                return .result(.success)
            case .setLocality(let value):
                guard value <= 4 else { return .result(.badLocality) }
                locality = value
                return .result(.success)
            case .getConfig:
                return .config(result: .success, flags: [])
            case .setDataFD:
                guard let descriptor = connection.pendingDescriptor else { return .result(.badParameter) }
                connection.pendingDescriptor = nil
                adoptDataDescriptor(descriptor)
                return .result(.success)
            case .setBufferSize(let wanted):
                if wanted != 0 && engine != nil { return .result(.badOrdinal) }
                let sizes = TPMEngine.setBufferSize(wanted)
                if wanted != 0 { bufferSize = sizes.size }
                return .bufferSize(result: .success, size: sizes.size, minimum: sizes.min, maximum: sizes.max)
            case .getInfo(let flags, let offset):
                return .info(text: TPMEngine.info(flags: UInt32(truncatingIfNeeded: flags.rawValue)), offset: offset)
            case .stop:
                if let engine { try engine.stop(storeVolatile: true) }
                engine = nil
                return .result(.success)
            case .lockStorage:
                // The container is held by this process from the start.
                return .result(.success)
            case .setStateBlob(let type, _, let bytes):
                guard engine == nil else { return .result(.badOrdinal) }   // only while stopped
                guard let blob = Self.blob(type) else { return .result(.badParameter) }
                if bytes.isEmpty {
                    try storage.delete(blob)
                } else {
                    let contents = try SwtpmStateFile.decode(bytes, file: "SET_STATEBLOB \(blob)", key: nil, form: .controlChannelBlob)
                    try storage.store(blob, contents.payload)
                }
                return .result(.success)
            default:
                break
            }
            // The rest need a running TPM.
            guard let engine else { return .result(.badOrdinal) }
            switch request {
            case .getTPMEstablished:
                return .tpmEstablished(result: .success, established: try engine.establishedBit())
            case .hashStart:
                try engine.hashStart()
            case .hashData(let bytes):
                try engine.hashData(bytes)
            case .hashEnd:
                try engine.hashEnd()
            case .cancelTPMCommand:
                engine.cancel()
            case .storeVolatile:
                try engine.storeVolatile()
            case .resetTPMEstablished(let requested):
                guard requested <= 4 else { return .result(.badLocality) }
                guard requested >= 3 else { return .result(.badLocality) }
                try engine.resetEstablishedBit(locality: requested)
            case .getStateBlob(let type, _, let offset):
                guard let blob = Self.blob(type) else { return .result(.badParameter) }
                // As swtpm: the permanent and save states come from storage (every NV change
                // is already committed there); the volatile state is stored first, handed
                // out, and then removed so that it is not resumed a second time here.
                if blob == .volatile { try engine.storeVolatile() }
                guard let state = try storage.load(blob), !state.isEmpty else {
                    return .stateBlob(result: .retry, flags: [], data: [])
                }
                if blob == .volatile { try storage.delete(.volatile) }
                let envelope = try SwtpmStateFile.encodeBlob(state, key: nil)
                return .stateBlob(result: .success, flags: [], blob: envelope, offset: offset)
            default:
                break
            }
            return .result(.success)
        } catch {
            log("control command \(request.command) failed: \(error)")
            return .result(.fail)
        }
    }

    static func blob(_ type: PTMBlobType) -> TPMStateBlob? {
        switch type {
        case .permanent: .permanent
        case .volatile: .volatile
        case .savestate: .saveState
        default: nil
        }
    }
}
