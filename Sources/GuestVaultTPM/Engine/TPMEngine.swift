import FoundationEssentials
import GuestVaultCore
import Synchronization

/// A TPM 2.0 on libtpms.
///
/// libtpms keeps one TPM per process in global state, so there is at most one live
/// engine per process: starting a second one throws ``TPMEngineError/Code/alreadyRunning``.
/// The server runs one process per VM, as swtpm does. Every NV change libtpms makes is
/// handed to the engine's ``TPMStateStorage`` and stored (durably, for a container)
/// before the command's response is returned.
public final class TPMEngine: Sendable {
    private static let live = Mutex(false)

    public let storage: any TPMStateStorage
    private let running = Mutex<LibTPMSBridge.ResponseBuffer?>(nil)

    private init(storage: any TPMStateStorage) {
        self.storage = storage
    }

    /// Starts the TPM from `storage`: with no permanent state there, libtpms manufactures
    /// a new TPM; with a stored volatile state, the TPM resumes from it (no Startup
    /// needed) unless `deleteVolatile`.
    public static func start(storage: any TPMStateStorage, deleteVolatile: Bool = false) throws -> TPMEngine {
        try live.withLock { isLive in
            guard !isLive else {
                throw TPMEngineError(.alreadyRunning, "a TPM engine is already running in this process (libtpms holds one TPM per process; run one server process per VM)")
            }
            isLive = true
        }
        let engine = TPMEngine(storage: storage)
        do {
            if deleteVolatile { try storage.delete(.volatile) }
            LibTPMSBridge.CallbackContext.shared.storage.withLock { $0 = storage }
            try LibTPMSBridge.chooseTPM2()
            try LibTPMSBridge.registerCallbacks()
            try LibTPMSBridge.mainInit()
            engine.running.withLock { $0 = LibTPMSBridge.ResponseBuffer() }
            register(engine) // trusted launch: host-side PCR reads (TPMEngine+PCRs.swift)
        } catch {
            LibTPMSBridge.terminate()
            LibTPMSBridge.CallbackContext.shared.storage.withLock { $0 = nil }
            live.withLock { $0 = false }
            throw error
        }
        return engine
    }

    /// Whether the TPM is running (not stopped).
    public var isRunning: Bool { running.withLock { $0 != nil } }

    /// Runs one TPM command at `locality` and returns the response. NV changes are
    /// stored before this returns.
    public func execute(_ command: [UInt8], locality: UInt8 = 0) throws -> [UInt8] {
        try running.withLock { buffer in
            guard let buffer else { throw TPMEngineError(.notRunning, "the TPM is stopped") }
            guard command.count >= 10 else { throw TPMEngineError(.malformed, "a TPM command is at least 10 bytes, not \(command.count)") }
            LibTPMSBridge.CallbackContext.shared.locality.store(UInt32(locality), ordering: .relaxed)
            var copy = command
            _ = LibTPMSBridge.takeStorageFailure()
            let response = try buffer.process(&copy)
            // libtpms answers even when its NV callback could not store the change; that
            // answer must not reach the guest as if the change were durable.
            if let failure = LibTPMSBridge.takeStorageFailure() {
                throw TPMEngineError(.storage, "the TPM command's NV change could not be committed", underlying: failure)
            }
            return response
        }
    }

    /// Runs the TPM command in `command` (libtpms may overwrite it) at `locality` and puts
    /// the response into `response`, replacing its contents and keeping its storage: the
    /// server's hot path, which allocates nothing once both buffers have grown. NV
    /// changes are stored before this returns.
    ///
    /// `count`: the command is the first `count` bytes of `command` (all of it if nil).
    public func execute(_ command: inout [UInt8], count: Int? = nil, locality: UInt8, response: inout [UInt8]) throws {
        let length = count ?? command.count
        precondition(length >= 0 && length <= command.count, "execute: count outside the command buffer")
        try running.withLock { buffer in
            guard let buffer else { throw TPMEngineError(.notRunning, "the TPM is stopped") }
            guard length >= 10 else { throw TPMEngineError(.malformed, "a TPM command is at least 10 bytes, not \(length)") }
            LibTPMSBridge.CallbackContext.shared.locality.store(UInt32(locality), ordering: .relaxed)
            _ = LibTPMSBridge.takeStorageFailure()
            try buffer.process(&command, count: length, into: &response)
            if let failure = LibTPMSBridge.takeStorageFailure() {
                throw TPMEngineError(.storage, "the TPM command's NV change could not be committed", underlying: failure)
            }
        }
    }

    /// Asks libtpms to cancel the command in progress (from another thread).
    public func cancel() { LibTPMSBridge.cancel() }

    /// Stores the volatile state (PCRs, loaded objects, sessions) as the `.volatile` blob.
    public func storeVolatile() throws {
        let blob = try running.withLock { buffer -> [UInt8] in
            guard buffer != nil else { throw TPMEngineError(.notRunning, "the TPM is stopped") }
            return try LibTPMSBridge.volatileAllStore()
        }
        try storage.store(.volatile, blob)
    }

    /// The current state blob of a running TPM (for migration).
    public func state(_ blob: TPMStateBlob) throws -> [UInt8]? {
        try running.withLock { buffer in
            guard buffer != nil else { throw TPMEngineError(.notRunning, "the TPM is stopped") }
            return try LibTPMSBridge.getState(blob)
        }
    }

    /// Stops the TPM, storing its volatile state first if `storeVolatile`. The engine
    /// cannot be used afterwards; another may be started.
    public func stop(storeVolatile: Bool = false) throws {
        if storeVolatile && isRunning { try self.storeVolatile() }
        running.withLock { buffer in
            guard buffer != nil else { return }
            buffer = nil
            Self.register(nil) // trusted launch (TPMEngine+PCRs.swift)
            LibTPMSBridge.terminate()
            LibTPMSBridge.CallbackContext.shared.storage.withLock { $0 = nil }
            Self.live.withLock { $0 = false }
        }
    }

    deinit {
        if running.withLock({ $0 != nil }) {
            LibTPMSBridge.terminate()
            LibTPMSBridge.CallbackContext.shared.storage.withLock { $0 = nil }
            Self.live.withLock { $0 = false }
        }
    }

    /// The TIS hash sequence (locality 4 measurements: CMD_HASH_START/DATA/END).
    public func hashStart() throws { try whileRunning { try LibTPMSBridge.hashStart() } }
    public func hashData(_ bytes: [UInt8]) throws { try whileRunning { try LibTPMSBridge.hashData(bytes) } }
    public func hashEnd() throws { try whileRunning { try LibTPMSBridge.hashEnd() } }

    /// The TPM established bit, and its reset (locality 3 or 4).
    public func establishedBit() throws -> Bool { try whileRunning { try LibTPMSBridge.establishedBit() } }
    public func resetEstablishedBit(locality: UInt8) throws {
        try whileRunning {
            LibTPMSBridge.CallbackContext.shared.locality.store(UInt32(locality), ordering: .relaxed)
            try LibTPMSBridge.resetEstablishedBit()
        }
    }

    private func whileRunning<T>(_ body: () throws -> T) throws -> T {
        try running.withLock { buffer in
            guard buffer != nil else { throw TPMEngineError(.notRunning, "the TPM is stopped") }
            return try body()
        }
    }

    /// Sets the largest TPM command/response size; returns (size, minimum, maximum).
    public static func setBufferSize(_ wanted: UInt32) -> (size: UInt32, min: UInt32, max: UInt32) {
        LibTPMSBridge.setBufferSize(wanted)
    }

    /// libtpms' information JSON (TPMLIB_GetInfo flags).
    public static func info(flags: UInt32) -> String { LibTPMSBridge.info(flags) }
}
