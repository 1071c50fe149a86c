import GuestVaultCore

/// Checks TPM state blobs with libtpms itself: starts a TPM from them in memory and
/// stops it again. Needs the process's one TPM slot free.
public enum TPMStateCheck {
    public static func validate(permanent: [UInt8], volatile: [UInt8]?, savestate: [UInt8]?) throws {
        guard !permanent.isEmpty else { throw TPMEngineError(.malformed, "the permanent state is empty") }
        var blobs: [TPMStateBlob: [UInt8]] = [.permanent: permanent]
        if let volatile, !volatile.isEmpty { blobs[.volatile] = volatile }
        if let savestate, !savestate.isEmpty { blobs[.saveState] = savestate }
        let storage = MemoryTPMStorage(blobs)
        let engine = try TPMEngine.start(storage: storage)
        // A TPM that came up from this state answers a command.
        let response = try engine.execute(TPMCommand.getRandom(8).bytes)
        try engine.stop()
        guard response.count >= 10 else { throw TPMEngineError(.malformed, "the TPM started from this state does not answer") }
        if storage.snapshot[.permanent] == nil {
            throw TPMEngineError(.malformed, "libtpms did not keep the permanent state")
        }
    }
}
