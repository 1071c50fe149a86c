import Dispatch
import FoundationEssentials
import GuestVaultCore
public import GuestVaultSystem
public import Logging
import Synchronization

/// The swtpm-compatible server: one process per VM. The data channel carries TPM
/// commands; the control channel swtpm 0.7's commands (docs/SWTPM-PROTOCOL.md), so QEMU's
/// `-tpmdev emulator` and tpm2-tss's `swtpm` TCTI work unchanged.
///
/// A single thread polls the listening sockets and connections. Every NV change is
/// committed to the container before its response goes back. What a client can hold is
/// bounded (docs/SWTPM-PROTOCOL.md, section 8): the number of control connections, the
/// time a request may take to arrive, the bytes buffered per connection and in total, and
/// the time a client may take to read a reply. A failed accept (out of descriptors) is
/// logged and retried after a pause; the server keeps serving.
public final class TPMServer {
    public struct Configuration: Sendable {
        public var dataAddress: StreamSocket.Address?
        public var controlAddress: StreamSocket.Address
        /// Start the TPM at once instead of waiting for CMD_INIT.
        public var notNeedInit: Bool
        /// Send TPM2_Startup(CLEAR) after each start (for clients that do not).
        public var startupClear: Bool
        public var limits: Limits
        /// State blobs on the control channel and the writer-lock hand-off.
        public var migration: Migration
        /// swtpm's --terminate: end when a control channel client closes its connection
        /// (QEMU going away), instead of waiting for CMD_SHUTDOWN.
        public var terminateWhenControlCloses = false

        public init(dataAddress: StreamSocket.Address?, controlAddress: StreamSocket.Address, notNeedInit: Bool = false,
                    startupClear: Bool = false, limits: Limits = Limits(), migration: Migration = Migration()) {
            self.dataAddress = dataAddress
            self.controlAddress = controlAddress
            self.notNeedInit = notNeedInit
            self.startupClear = startupClear
            self.limits = limits
            self.migration = migration
        }
    }

    /// What one client may hold of the server.
    public struct Limits: Sendable {
        /// Control connections served at once; further clients wait in the listen backlog
        /// (swtpm serves one at a time; tpm2-tss opens one per command while QEMU holds
        /// one for the VM's life).
        public var maximumControlConnections: Int
        /// Milliseconds a control request may take from its first byte to its last
        /// (swtpm allows 500 ms). A connection that runs out of it is closed without a reply.
        public var requestTimeout: Int32
        /// Milliseconds a client may take to take a whole reply off the socket. A client
        /// that does not read is disconnected, so it cannot freeze the TPM.
        public var writeTimeout: Int32
        /// The most bytes of unfinished control requests held for all connections together;
        /// the connection whose bytes go over it is closed. (One request is capped by
        /// ``ControlDecoder/maximumMessage``.)
        public var maximumBufferedBytes: Int
        /// Milliseconds to wait before accepting again after accept() failed (no
        /// descriptors left, for example).
        public var acceptBackoff: Int32

        public init(maximumControlConnections: Int = 8, requestTimeout: Int32 = 5_000, writeTimeout: Int32 = 5_000,
                    maximumBufferedBytes: Int = 8 << 20, acceptBackoff: Int32 = 100) {
            self.maximumControlConnections = max(1, maximumControlConnections)
            self.requestTimeout = max(1, requestTimeout)
            self.writeTimeout = max(1, writeTimeout)
            self.maximumBufferedBytes = max(ControlDecoder.smallestMaximumMessage, maximumBufferedBytes)
            self.acceptBackoff = max(1, acceptBackoff)
        }
    }

    let storage: any TPMStateStorage
    let configuration: Configuration
    var engine: TPMEngine?
    var locality: UInt8 = 0
    var bufferSize: UInt32 = 4096
    /// Set by SIGTERM/SIGINT (or ``requestStop()``): store the volatile state and exit.
    let stopRequested = Atomic<Bool>(false)
    /// Wakes the loop for a stop request, so that an idle server waits in poll(2) with
    /// no timeout (swtpm's idle cost: no system call at all).
    public let wakeup: WakeupEvent
    /// A stop requested outside the server (a signal handler's flag), looked at whenever
    /// the loop wakes; the requester then signals ``wakeup``.
    private let externalStop: (@Sendable () -> Bool)?
    var shutdownRequested = false
    /// An NV change could not be committed: the TPM's memory is ahead of its storage, so
    /// it answers nothing but TPM_RC_FAILURE, and its volatile state is not stored, until
    /// CMD_INIT restarts it from the last committed state (docs/SWTPM-PROTOCOL.md, 8.4).
    var nvFailed = false
    /// Where the server reports; the CLI puts the VM id in its metadata.
    let logger: Logger
    /// The container's side of migration (sealing key, generations, writer lock); nil for
    /// a TPM without a container, which then hands out no blob unless a migration key or
    /// plaintext is configured.
    let migrationHost: (any TPMMigrationHost)?
    /// swtpm's migration key, loaded from ``Migration/key``.
    let migrationKey: SwtpmKey?
    var outgoingSet: OutgoingSet?
    var incomingSet: IncomingSet?
    /// Set when the reply being sent hands the writer lock over (release-lock-outgoing).
    var releaseLockAfterReply = false

    private var dataListener: StreamSocket?
    private var controlListener: StreamSocket
    var dataConnection: Connection?
    private var controlConnections: [Connection] = []
    /// Monotonic milliseconds before which a listener is not polled after accept failed.
    private var controlAcceptPausedUntil: Int64 = 0

    /// The data channel's receive buffer and the command and response of the command in
    /// flight, reused for every command: a round trip allocates nothing once they have
    /// grown to the largest command and response. ``run()`` keeps them in a local
    /// variable (as it keeps its poll set), so that using them costs no dynamic
    /// exclusivity check, which a class's stored property would (docs/PERFORMANCE.md).
    struct DataPathBuffers {
        /// The data connection's decoder, and which connection it belongs to (a new data
        /// connection, accepted or passed with SET_DATAFD, starts with a new decoder).
        var decoder = DataChannelDecoder()
        var decoderOwner: UInt64?
        var receive = [UInt8](repeating: 0, count: 65536)
        var command: [UInt8] = []
        var response: [UInt8] = []
        var framed: [UInt8] = []
    }
    private var dataAcceptPausedUntil: Int64 = 0

    final class Connection {
        let socket: StreamSocket
        var control = ControlDecoder()
        /// Unique in the process: tells the data path's decoder whose bytes it holds (an
        /// object's address may be reused by the next connection; this number never is).
        let serial = Connection.serials.add(1, ordering: .relaxed).newValue
        private static let serials = Atomic<UInt64>(0)
        /// A descriptor that came with the receive being handled (SCM_RIGHTS); released
        /// (closed) after that receive unless SET_DATAFD took it.
        var passedDescriptor: StreamSocket?
        /// When the unfinished control request's first byte arrived (monotonic ms).
        var requestStarted: Int64?
        init(_ socket: StreamSocket) { self.socket = socket }
    }

    /// `externalStop`: a stop flag kept outside the server (a signal handler's), read each
    /// time the loop wakes; whoever sets it writes to ``wakeup``.
    public init(storage: any TPMStateStorage, configuration: Configuration, logger: Logger,
                migrationHost: (any TPMMigrationHost)? = nil, externalStop: (@Sendable () -> Bool)? = nil) throws {
        self.storage = storage
        self.externalStop = externalStop
        wakeup = try WakeupEvent()
        self.configuration = configuration
        self.logger = logger
        self.migrationHost = migrationHost
        migrationKey = try configuration.migration.key?.load()
        try configuration.migration.key?.removeFileIfAsked()
        controlListener = try StreamSocket.listen(configuration.controlAddress)
        if let data = configuration.dataAddress { dataListener = try StreamSocket.listen(data) }
    }

    /// The TCP port of the data channel (after listening on port 0).
    public var dataPort: UInt16? { dataListener?.localPort }
    public var controlPort: UInt16? { controlListener.localPort }

    /// Asks the loop to store the volatile state and return (signal-safe: an atomic store
    /// and one write(2) that wakes the loop).
    public func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wakeup.signal()
    }


    /// Serves until CMD_SHUTDOWN or ``requestStop()``. On a stop request the volatile
    /// state is stored and committed first.
    public func run() throws {
        if configuration.notNeedInit { try startTPM(.resumeOnce) }
        let limits = configuration.limits
        var pollSet = PollSet()
        var buffers = DataPathBuffers()
        while !shutdownRequested {
            if stopRequested.load(ordering: .acquiring) || externalStop?() == true {
                if let engine {
                    // After the hand-off the destination owns the container (and the state).
                    try engine.stop(storeVolatile: !nvFailed && (migrationHost?.holdsWriterLock ?? true))
                    self.engine = nil
                    logger.info("stored the volatile state and stopped")
                }
                break
            }
            let now = Self.milliseconds()
            let acceptControl = controlConnections.count < limits.maximumControlConnections && now >= controlAcceptPausedUntil
            let acceptData = dataListener != nil && now >= dataAcceptPausedUntil
            // The set and the indices are rebuilt each time without allocating: the poll
            // set keeps its storage (docs/PERFORMANCE.md, third round).
            pollSet.removeAll()
            let wakeupIndex = pollSet.add(wakeup.descriptor)
            let controlListenerIndex = acceptControl ? pollSet.add(controlListener.descriptor) : -1
            let dataListenerIndex = acceptData ? dataListener.map { pollSet.add($0.descriptor) } ?? -1 : -1
            let dataConnectionIndex = dataConnection.map { pollSet.add($0.socket.descriptor) } ?? -1
            let firstControlIndex = pollSet.count
            for connection in controlConnections { pollSet.add(connection.socket.descriptor) }
            let polled = controlConnections.count
            try pollSet.wait(timeout: pollTimeout(now: now))
            if pollSet.isReady(wakeupIndex) { wakeup.drain() }
            if pollSet.isReady(controlListenerIndex) {
                if let socket = accept(controlListener, what: "control", pause: &controlAcceptPausedUntil) {
                    controlConnections.append(Connection(socket))
                }
            }
            if pollSet.isReady(dataListenerIndex), let dataListener {
                if let socket = accept(dataListener, what: "data", pause: &dataAcceptPausedUntil) {
                    dataConnection = Connection(socket)
                }
            }
            if pollSet.isReady(dataConnectionIndex), let connection = dataConnection {
                if !serviceData(connection, buffers: &buffers), dataConnection === connection { dataConnection = nil }
            }
            if polled > 0 {
                // The connections that were polled are the first `polled` ones (an accept
                // above only appends); one that is removed while serving shifts the rest.
                var index = 0
                var position = 0
                while index < polled, position < controlConnections.count {
                    let connection = controlConnections[position]
                    let ready = pollSet.isReady(firstControlIndex + index)
                    index += 1
                    guard ready else { position += 1; continue }
                    if serviceControl(connection) {
                        position += 1
                    } else {
                        controlConnections.remove(at: position)
                        if configuration.terminateWhenControlCloses { shutdownRequested = true }
                    }
                    if shutdownRequested { break }
                }
            }
            if hasPendingRequests { expireRequests() }
        }
        if let engine {
            try engine.stop()
            self.engine = nil
        }
    }

    /// Accepts one connection, or logs why not and pauses that listener: the error
    /// (EMFILE when the process is out of descriptors) is not the end of the server.
    private func accept(_ listener: StreamSocket, what: String, pause: inout Int64) -> StreamSocket? {
        do {
            return try listener.accept()
        } catch {
            let backoff = configuration.limits.acceptBackoff
            pause = Self.milliseconds() + Int64(backoff)
            logger.error("\(what) channel: accept failed; trying again in \(backoff) ms",
                         metadata: ["error": "\(ErrorChain.message(of: error))"])
            return nil
        }
    }

    /// Until the next request deadline or paused accept; with neither, for ever (a stop
    /// request wakes the loop through ``wakeup``).
    private func pollTimeout(now: Int64) -> Int32 {
        var next = Int64.max
        for connection in controlConnections {
            if let started = connection.requestStarted {
                next = min(next, started + Int64(configuration.limits.requestTimeout))
            }
        }
        if controlAcceptPausedUntil > now { next = min(next, controlAcceptPausedUntil) }
        if dataAcceptPausedUntil > now { next = min(next, dataAcceptPausedUntil) }
        return next == Int64.max ? -1 : Int32(clamping: max(0, next - now))
    }

    /// Closes control connections whose request has not arrived whole in time (swtpm
    /// closes them without a reply, too).
    private func expireRequests() {
        let now = Self.milliseconds()
        let timeout = Int64(configuration.limits.requestTimeout)
        controlConnections.removeAll { connection in
            guard let started = connection.requestStarted, now - started >= timeout else { return false }
            var reason = ""
            do throws(ControlChannelError) { try connection.control.finish() } catch { reason = error.message }
            logger.warning("control channel: the request did not arrive whole within \(timeout) ms; closed the connection",
                           metadata: ["bufferedBytes": "\(connection.control.bufferedByteCount)", "error": "\(reason)"])
            return true
        }
    }

    /// Whether a control request is waiting for its last bytes (only then can one expire).
    private var hasPendingRequests: Bool {
        controlConnections.contains { $0.requestStarted != nil }
    }

    /// Monotonic milliseconds.
    static func milliseconds() -> Int64 {
        Int64(clamping: DispatchTime.now().uptimeNanoseconds / 1_000_000)
    }

    /// The control connections' unfinished bytes, all together.
    var bufferedControlBytes: Int { controlConnections.reduce(0) { $0 + $1.control.bufferedByteCount } }

    /// Sends a reply within the write deadline; false when the client is to be dropped.
    func reply(_ bytes: [UInt8], on connection: Connection, channel: String) -> Bool {
        do {
            try connection.socket.send(bytes, timeout: configuration.limits.writeTimeout)
            return true
        } catch {
            logger.warning("\(channel) channel: could not send a reply; closed the connection",
                           metadata: ["error": "\(ErrorChain.message(of: error))"])
            return false
        }
    }

    /// The data channel handed over with SET_DATAFD (QEMU's socketpair end).
    func adoptDataChannel(_ socket: StreamSocket) {
        dataConnection = Connection(socket)
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
        nvFailed = false
        try ensureWriterLock(retries: 0)
        try commitIncomingSet()
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
}
