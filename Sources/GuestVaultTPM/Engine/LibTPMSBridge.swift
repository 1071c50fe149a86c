internal import CLibTPMS
import FoundationEssentials
import Glibc
import GuestVaultCore
import Synchronization

/// The thin layer over libtpms: the only file that calls it or touches its pointers.
///
/// libtpms keeps one TPM per process in global state and calls back through plain C
/// function pointers, which cannot carry a context: the callbacks find the storage in
/// ``CallbackContext``, a process-wide slot the engine fills while it runs.
enum LibTPMSBridge {
    static let success: UInt32 = 0
    static let retry: UInt32 = 0x800   // TPM_RETRY: "no state yet"
    static let fail: UInt32 = 9        // TPM_FAIL

    /// The storage the callbacks use, and the locality of the command being processed.
    final class CallbackContext: Sendable {
        static let shared = CallbackContext()
        let storage = Mutex<(any TPMStateStorage)?>(nil)
        let locality = Atomic<UInt32>(0)
        /// The last storage failure, for the engine to report as the cause.
        let lastError = Mutex<TPMEngineError?>(nil)
    }

    static func registerCallbacks() throws {
        var callbacks = libtpms_callbacks()
        callbacks.sizeOfStruct = Int32(MemoryLayout<libtpms_callbacks>.size)
        callbacks.tpm_nvram_init = { 0 }
        callbacks.tpm_nvram_loaddata = { data, length, _, name in
            guard let data, let length, let name, let blob = TPMStateBlob(libtpmsName: String(cString: name)) else { return LibTPMSBridge.fail }
            let storage = CallbackContext.shared.storage.withLock { $0 }
            guard let storage else { return LibTPMSBridge.fail }
            do {
                guard let bytes = try storage.load(blob) else { return LibTPMSBridge.retry }
                // libtpms frees what it is given with free().
                guard let buffer = malloc(max(bytes.count, 1))?.assumingMemoryBound(to: UInt8.self) else { return LibTPMSBridge.fail }
                bytes.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress!, count: bytes.count) }
                data.pointee = buffer
                length.pointee = UInt32(bytes.count)
                return 0
            } catch {
                CallbackContext.shared.lastError.withLock { $0 = TPMEngineError(.storage, "loading the \(blob) state failed", underlying: error) }
                return LibTPMSBridge.fail
            }
        }
        callbacks.tpm_nvram_storedata = { data, length, _, name in
            guard let name, let blob = TPMStateBlob(libtpmsName: String(cString: name)) else { return LibTPMSBridge.fail }
            let storage = CallbackContext.shared.storage.withLock { $0 }
            guard let storage else { return LibTPMSBridge.fail }
            let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: Int(length))) } ?? []
            do {
                try storage.store(blob, bytes)
                return 0
            } catch {
                CallbackContext.shared.lastError.withLock { $0 = TPMEngineError(.storage, "storing the \(blob) state failed", underlying: error) }
                return LibTPMSBridge.fail
            }
        }
        callbacks.tpm_nvram_deletename = { _, name, mustExist in
            guard let name, let blob = TPMStateBlob(libtpmsName: String(cString: name)) else { return LibTPMSBridge.fail }
            let storage = CallbackContext.shared.storage.withLock { $0 }
            guard let storage else { return LibTPMSBridge.fail }
            do {
                if mustExist != 0, try storage.load(blob) == nil { return LibTPMSBridge.fail }
                try storage.delete(blob)
                return 0
            } catch {
                CallbackContext.shared.lastError.withLock { $0 = TPMEngineError(.storage, "deleting the \(blob) state failed", underlying: error) }
                return LibTPMSBridge.fail
            }
        }
        callbacks.tpm_io_init = { 0 }
        callbacks.tpm_io_getlocality = { locality, _ in
            locality?.pointee = CallbackContext.shared.locality.load(ordering: .relaxed)
            return 0
        }
        callbacks.tpm_io_getphysicalpresence = { presence, _ in
            presence?.pointee = 0
            return 0
        }
        try check(TPMLIB_RegisterCallbacks(&callbacks), "TPMLIB_RegisterCallbacks")
    }

    static func check(_ result: TPM_RESULT, _ what: String) throws {
        guard result == 0 else {
            let cause = takeStorageFailure()
            throw TPMEngineError(.libtpms, "\(what) returned 0x\(String(result, radix: 16))", responseCode: result,
                                 underlying: cause)
        }
    }

    /// The storage failure an NV callback met since the last call, if any (and forgets it).
    static func takeStorageFailure() -> TPMEngineError? {
        CallbackContext.shared.lastError.withLock { error in
            defer { error = nil }
            return error
        }
    }

    static func chooseTPM2() throws {
        try check(TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2), "TPMLIB_ChooseTPMVersion")
    }

    static func mainInit() throws { try check(TPMLIB_MainInit(), "TPMLIB_MainInit") }

    static func terminate() { TPMLIB_Terminate() }

    /// One command through TPMLIB_Process; libtpms allocates (and may reuse) the
    /// response buffer, which is freed here.
    static func process(_ command: [UInt8]) throws -> [UInt8] {
        var response: UnsafeMutablePointer<UInt8>?
        var responseSize: UInt32 = 0
        var bufferSize: UInt32 = 0
        var copy = command
        let result = copy.withUnsafeMutableBufferPointer {
            TPMLIB_Process(&response, &responseSize, &bufferSize, $0.baseAddress, UInt32($0.count))
        }
        defer { free(response) }
        try check(result, "TPMLIB_Process")
        guard let response else { throw TPMEngineError(.malformed, "libtpms returned no response") }
        return Array(UnsafeBufferPointer(start: response, count: Int(responseSize)))
    }

    /// A reusable response buffer for the hot path: libtpms reallocates it only when it
    /// must, so a round trip costs no allocation in libtpms.
    final class ResponseBuffer {
        var pointer: UnsafeMutablePointer<UInt8>?
        var capacity: UInt32 = 0
        deinit { free(pointer) }

        func process(_ command: inout [UInt8]) throws -> [UInt8] {
            var size: UInt32 = 0
            let result = command.withUnsafeMutableBufferPointer {
                TPMLIB_Process(&pointer, &size, &capacity, $0.baseAddress, UInt32($0.count))
            }
            try check(result, "TPMLIB_Process")
            guard let pointer else { throw TPMEngineError(.malformed, "libtpms returned no response") }
            return Array(UnsafeBufferPointer(start: pointer, count: Int(size)))
        }

        /// `process` of the first `count` bytes of `command`, with the response copied
        /// into `response` (its storage kept).
        func process(_ command: inout [UInt8], count: Int, into response: inout [UInt8]) throws {
            var size: UInt32 = 0
            let result = command.withUnsafeMutableBufferPointer {
                TPMLIB_Process(&pointer, &size, &capacity, $0.baseAddress, UInt32(min(count, $0.count)))
            }
            try check(result, "TPMLIB_Process")
            guard let pointer else { throw TPMEngineError(.malformed, "libtpms returned no response") }
            // Resized only when the length differs (most answers repeat their length),
            // then one copy.
            let length = Int(size)
            if response.count > length {
                response.removeSubrange(length...)
            } else if response.count < length {
                response.append(contentsOf: repeatElement(0, count: length - response.count))
            }
            response.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: length)) }
        }
    }

    static func cancel() { _ = TPMLIB_CancelCommand() }

    static func volatileAllStore() throws -> [UInt8] {
        var buffer: UnsafeMutablePointer<UInt8>?
        var length: UInt32 = 0
        let result = TPMLIB_VolatileAll_Store(&buffer, &length)
        defer { free(buffer) }
        try check(result, "TPMLIB_VolatileAll_Store")
        guard let buffer else { return [] }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(length)))
    }

    static func stateType(_ blob: TPMStateBlob) -> TPMLIB_StateType {
        switch blob {
        case .permanent: TPMLIB_STATE_PERMANENT
        case .volatile: TPMLIB_STATE_VOLATILE
        case .saveState: TPMLIB_STATE_SAVE_STATE
        }
    }

    static func getState(_ blob: TPMStateBlob) throws -> [UInt8]? {
        var buffer: UnsafeMutablePointer<UInt8>?
        var length: UInt32 = 0
        let result = TPMLIB_GetState(stateType(blob), &buffer, &length)
        defer { free(buffer) }
        if result != 0 { return nil }
        guard let buffer else { return nil }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(length)))
    }

    static func setState(_ blob: TPMStateBlob, _ bytes: [UInt8]?) throws {
        let result: TPM_RESULT
        if let bytes {
            result = bytes.withUnsafeBufferPointer { TPMLIB_SetState(stateType(blob), $0.baseAddress, UInt32($0.count)) }
        } else {
            result = TPMLIB_SetState(stateType(blob), nil, 0)
        }
        try check(result, "TPMLIB_SetState(\(blob))")
    }

    static func validateState(_ blobs: [TPMStateBlob]) throws {
        var mask: UInt32 = 0
        for blob in blobs { mask |= stateType(blob).rawValue }
        try check(TPMLIB_ValidateState(TPMLIB_StateType(rawValue: mask), 0), "TPMLIB_ValidateState")
    }

    static func setBufferSize(_ wanted: UInt32) -> (size: UInt32, min: UInt32, max: UInt32) {
        var minimum: UInt32 = 0, maximum: UInt32 = 0
        let size = TPMLIB_SetBufferSize(wanted, &minimum, &maximum)
        return (size, minimum, maximum)
    }

    static func hashStart() throws { try check(TPM_IO_Hash_Start(), "TPM_IO_Hash_Start") }

    static func hashData(_ bytes: [UInt8]) throws {
        try check(bytes.withUnsafeBufferPointer { TPM_IO_Hash_Data($0.baseAddress, UInt32($0.count)) }, "TPM_IO_Hash_Data")
    }

    static func hashEnd() throws { try check(TPM_IO_Hash_End(), "TPM_IO_Hash_End") }

    static func establishedBit() throws -> Bool {
        var bit: TPM_BOOL = 0
        try check(TPM_IO_TpmEstablished_Get(&bit), "TPM_IO_TpmEstablished_Get")
        return bit != 0
    }

    static func resetEstablishedBit() throws { try check(TPM_IO_TpmEstablished_Reset(), "TPM_IO_TpmEstablished_Reset") }

    static func info(_ flags: UInt32) -> String {
        guard let text = TPMLIB_GetInfo(TPMLIB_InfoFlags(rawValue: flags)) else { return "{}" }
        defer { free(text) }
        return String(cString: text)
    }
}
