import Dispatch
import Foundation
import Glibc
public import GuestVaultSystem
import Synchronization
import GuestVaultCore

/// The swtpm-compatible server: one process per VM. The data channel carries TPM
/// commands; the control channel swtpm 0.7's commands (docs/SWTPM-PROTOCOL.md), so QEMU's
/// `-tpmdev emulator` and tpm2-tss's `swtpm` TCTI work unchanged.
///
/// A single thread polls the listening sockets and connections. Every NV change is
/// committed to the container before its response goes back.
public final class TPMServer {
    public struct Configuration: Sendable {
        public var dataAddress: StreamSocket.Address?
        public var controlAddress: StreamSocket.Address
        /// Start the TPM at once instead of waiting for CMD_INIT.
        public var notNeedInit: Bool
        /// Send TPM2_Startup(CLEAR) after each start (for clients that do not).
        public var startupClear: Bool

        public init(dataAddress: StreamSocket.Address?, controlAddress: StreamSocket.Address, notNeedInit: Bool = false, startupClear: Bool = false) {
            self.dataAddress = dataAddress
            self.controlAddress = controlAddress
            self.notNeedInit = notNeedInit
            self.startupClear = startupClear
        }
    }

    let storage: any TPMStateStorage
    let configuration: Configuration
    var engine: TPMEngine?
    var locality: UInt8 = 0
    var bufferSize: UInt32 = 4096
    /// Set by SIGTERM/SIGINT (or ``requestStop()``): store the volatile state and exit.
    let stopRequested = Atomic<Bool>(false)
    var shutdownRequested = false
    var log: (String) -> Void

    private var dataListener: StreamSocket?
    private var controlListener: StreamSocket
    private var dataConnection: Connection?
    private var controlConnections: [Connection] = []

    final class Connection {
        let socket: StreamSocket
        var control = ControlDecoder()
        var data = DataChannelDecoder()
        var pendingDescriptor: Int32?
        init(_ socket: StreamSocket) { self.socket = socket }
    }

    public init(storage: any TPMStateStorage, configuration: Configuration, log: @escaping (String) -> Void = { _ in }) throws {
        self.storage = storage
        self.configuration = configuration
        self.log = log
        controlListener = try StreamSocket.listen(configuration.controlAddress)
        if let data = configuration.dataAddress { dataListener = try StreamSocket.listen(data) }
    }

    /// The TCP port of the data channel (after listening on port 0).
    public var dataPort: UInt16? { dataListener?.localPort }
    public var controlPort: UInt16? { controlListener.localPort }

    /// Asks the loop to store the volatile state and return (signal-safe: only an atomic store).
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    /// Serves until CMD_SHUTDOWN or ``requestStop()``. On a stop request the volatile
    /// state is stored and committed first.
    public func run() throws {
        if configuration.notNeedInit { try startTPM(.resumeOnce) }
        while !shutdownRequested {
            if stopRequested.load(ordering: .relaxed) {
                if let engine {
                    try engine.stop(storeVolatile: true)
                    self.engine = nil
                    log("stored the volatile state and stopped")
                }
                break
            }
            var sockets: [Int32] = [controlListener.descriptor]
            if let dataListener { sockets.append(dataListener.descriptor) }
            if let dataConnection { sockets.append(dataConnection.socket.descriptor) }
            sockets += controlConnections.map(\.socket.descriptor)
            let ready = Set(try StreamSocket.poll(sockets, timeout: 200).map { sockets[$0] })
            if ready.contains(controlListener.descriptor) {
                controlConnections.append(Connection(try controlListener.accept()))
            }
            if let dataListener, ready.contains(dataListener.descriptor) {
                dataConnection = Connection(try dataListener.accept())
            }
            if let connection = dataConnection, ready.contains(connection.socket.descriptor) {
                if !serviceData(connection) { dataConnection = nil }
            }
            for connection in controlConnections where ready.contains(connection.socket.descriptor) {
                if !serviceControl(connection) {
                    controlConnections.removeAll { $0 === connection }
                }
                if shutdownRequested { break }
            }
        }
        if let engine {
            try engine.stop()
            self.engine = nil
        }
    }

    /// The data channel handed over with SET_DATAFD (QEMU's socketpair end).
    func adoptDataDescriptor(_ descriptor: Int32) {
        dataConnection = Connection(StreamSocket(adopting: descriptor, name: "data channel (passed descriptor)"))
    }

    /// How a start treats a stored volatile state.
    enum VolatileHandling {
        /// A fresh TPM reset (QEMU starting a VM: CMD_INIT without flags): a stored
        /// volatile state is dropped, the guest's firmware sends TPM2_Startup.
        case discard
        /// Resume from it once and then drop it: CMD_INIT with DELETE_VOLATILE (QEMU after
        /// an incoming migration) and `--flags not-need-init` (a restarted server).
        case resumeOnce
    }

    func startTPM(_ volatile: VolatileHandling) throws {
        if let engine { try engine.stop() }
        engine = nil
        let started = try TPMEngine.start(storage: storage, deleteVolatile: volatile == .discard)
        if volatile == .resumeOnce { try storage.delete(.volatile) }
        _ = TPMEngine.setBufferSize(bufferSize)
        engine = started
        if configuration.startupClear {
            let response = try TPMResponse(started.execute(TPMCommand.startup(TPMConstant.suClear).bytes))
            guard response.code == 0 || response.code == TPMConstant.rcInitialize else {
                try response.check("TPM2_Startup")
                return
            }
        }
    }

    // MARK: Data channel

    /// Reads TPM commands and answers them. Returns false when the connection is done.
    private func serviceData(_ connection: Connection) -> Bool {
        guard let bytes = try? connection.socket.receive(), !bytes.isEmpty else { return false }
        connection.data.maximumCommandSize = Int(max(bufferSize, 4096))
        connection.data.append(bytes)
        while true {
            let frame: TPMCommandFrame?
            do {
                frame = try connection.data.next()
            } catch {
                log("data channel: \(error); answered with an error and closed the connection")
                try? connection.socket.send(error.errorResponse)
                return false
            }
            guard let frame else { return true }
            if let prefixLocality = frame.locality { locality = prefixLocality }
            let response = execute(frame.bytes, locality: locality)
            do {
                try connection.socket.send(frame.encodeResponse(response))
            } catch {
                return false
            }
        }
    }

    func execute(_ command: [UInt8], locality: UInt8) -> [UInt8] {
        // TPM_RC_FAILURE while not initialised, as swtpm answers (QEMU probes before INIT).
        guard let engine else { return DataChannelResponse.error(DataChannelResponse.failureResponseCode) }
        do {
            return try engine.execute(command, locality: locality)
        } catch {
            log("TPM command failed: \(error)")
            return DataChannelResponse.error(DataChannelResponse.failureResponseCode)
        }
    }

    // MARK: Control channel

    /// One receive is appended as a unit (swtpm's framing: a receive's trailing bytes
    /// belong to its request, as QEMU pads SET_LOCALITY); a request may span receives.
    private func serviceControl(_ connection: Connection) -> Bool {
        guard let (bytes, descriptor) = try? connection.socket.receiveWithDescriptor(), !bytes.isEmpty else { return false }
        if let descriptor {
            if let old = connection.pendingDescriptor { close(old) }
            connection.pendingDescriptor = descriptor
        }
        connection.control.append(bytes)
        while true {
            let request: ControlRequest?
            do {
                request = try connection.control.next()
            } catch {
                log("control channel: \(error.reason); answered and closed the connection")
                if let reply = error.reply { try? connection.socket.send(ControlResponse.result(reply).encoded()) }
                return false
            }
            guard let request else { return true }
            let reply = handle(request, connection: connection)
            log("control: \(request.command) -> \(reply.encoded().prefix(4).map { String(format: "%02x", $0) }.joined())")
            do { try connection.socket.send(reply.encoded()) } catch { return false }
            if shutdownRequested { return false }
        }
    }
}
