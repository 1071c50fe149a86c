import GuestVaultCore
import GuestVaultSystem
import Logging

extension TPMServer {
    /// Carries out one control command the way swtpm 0.7.1 does (docs/SWTPM-PROTOCOL.md).
    func handle(_ request: ControlRequest, connection: Connection) -> ControlResponse {
        do {
            switch request {
            case .getCapability:
                return .capabilities(.guestvaultServe)
            case .initialize(let flags):
                try startTPM(flags.contains(.deleteVolatile) ? .resumeOnce : .discard)
                return .result(.success)
            case .shutdown:
                dropIncomingSet(reason: "CMD_SHUTDOWN came before CMD_INIT")
                if let engine { try engine.stop() }
                engine = nil
                shutdownRequested = true
                return .result(.success)
            case .setLocality(let value):
                guard value <= 4 else { return .result(.badLocality) }
                locality = value
                return .result(.success)
            case .getConfig:
                // Bit 2: a migration key is configured (the container's, or swtpm's).
                return .config(result: .success, flags: migrationKey != nil || (migrationHost != nil && !configuration.migration.allowPlaintext) ? [.migrationKey] : [])
            case .setDataFD:
                return setDataChannel(connection)
            case .setBufferSize(let wanted):
                if wanted != 0 && engine != nil { return .result(.badOrdinal) }
                let sizes = TPMEngine.setBufferSize(wanted)
                if wanted != 0 { bufferSize = sizes.size }
                return .bufferSize(result: .success, size: sizes.size, minimum: sizes.min, maximum: sizes.max)
            case .getInfo(let flags, let offset):
                return .info(text: TPMEngine.info(flags: UInt32(truncatingIfNeeded: flags.rawValue)), offset: offset)
            case .stop:
                // After a failed NV commit the volatile state is not stored (8.4), nor after
                // the writer lock went to the migration destination.
                if let engine { try engine.stop(storeVolatile: !nvFailed && (migrationHost?.holdsWriterLock ?? true)) }
                engine = nil
                return .result(.success)
            case .lockStorage(let retries):
                return lockStorage(retries: retries)
            case .setStateBlob(let type, let flags, let bytes):
                return try setStateBlob(type: type, flags: flags, bytes: bytes)
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
                guard !nvFailed else { return .result(.fail) }
                try engine.storeVolatile()
            case .resetTPMEstablished(let requested):
                guard requested <= 4 else { return .result(.badLocality) }
                guard requested >= 3 else { return .result(.badLocality) }
                try engine.resetEstablishedBit(locality: requested)
            case .getStateBlob(let type, let flags, let offset):
                return try getStateBlob(engine, type: type, flags: flags, offset: offset)
            default:
                break
            }
            return .result(.success)
        } catch {
            logger.error("control command \(request.command) failed", metadata: ["error": "\(ErrorChain.message(of: error))"])
            return .result(.fail)
        }
    }

    /// SET_DATAFD: the descriptor that came with this request becomes the data channel,
    /// unless one is attached already (TPM_IOERROR, as swtpm; the descriptor is closed).
    func setDataChannel(_ connection: Connection) -> ControlResponse {
        guard let passed = connection.passedDescriptor else { return .result(.badParameter) }
        connection.passedDescriptor = nil
        guard dataConnection == nil else {
            logger.warning("control channel: SET_DATAFD while a data channel is attached; refused, the new descriptor was closed")
            return .result(.ioError)
        }
        adoptDataChannel(passed)
        return .result(.success)
    }
}
