import GuestVaultCore

/// GET_STATEBLOB and SET_STATEBLOB: the one place where state blobs leave and enter the
/// server (QEMU's migration). The blobs travel in swtpm's envelope, plain (the sealing of
/// blobs on the control channel hooks in here).
extension TPMServer {
    /// GET_STATEBLOB. As swtpm: the permanent and save states come from storage (every
    /// NV change is already committed there); the volatile state is stored first, handed
    /// out, and then removed so that it is not resumed a second time here.
    func getStateBlob(_ engine: TPMEngine, type: PTMBlobType, flags: PTMStateFlags, offset: UInt32) throws -> ControlResponse {
        guard let blob = Self.blob(type) else { return .result(.badParameter) }
        // After a failed NV commit, the TPM's memory is not what storage holds (8.4).
        guard !nvFailed else { return .result(.fail) }
        if blob == .volatile { try engine.storeVolatile() }
        guard let state = try storage.load(blob), !state.isEmpty else {
            return .stateBlob(result: .retry, flags: [], data: [])
        }
        if blob == .volatile { try storage.delete(.volatile) }
        let envelope = try SwtpmStateFile.encodeBlob(state, key: nil)
        return .stateBlob(result: .success, flags: [], blob: envelope, offset: offset)
    }

    /// SET_STATEBLOB, only while the TPM is stopped. An empty blob deletes the state.
    func setStateBlob(type: PTMBlobType, flags: PTMStateFlags, bytes: [UInt8]) throws -> ControlResponse {
        guard engine == nil else { return .result(.badOrdinal) }
        guard let blob = Self.blob(type) else { return .result(.badParameter) }
        if bytes.isEmpty {
            try storage.delete(blob)
        } else {
            let contents = try SwtpmStateFile.decode(bytes, file: "SET_STATEBLOB \(blob)", key: nil, form: .controlChannelBlob)
            try storage.store(blob, contents.payload)
        }
        return .result(.success)
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
