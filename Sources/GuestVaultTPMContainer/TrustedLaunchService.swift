import Dispatch
import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem
import GuestVaultTPM
public import Logging
import Synchronization

/// What `guestvault serve` runs beside the TPM for trusted launch (docs/TRUSTED-LAUNCH.md),
/// on one thread of its own:
///
/// - the host channel: a Unix socket (0600, never the guest's data channel) on which
///   host tools read the PCRs between the guest's commands, record the boot policy into
///   the container, ask for the policy result and force a seal of the UEFI variables;
/// - the seal-back of the plaintext UEFI variable store every `pollInterval`;
/// - the boot-policy check once the firmware has finished measuring.
///
/// Host channel requests are one line, and each gets one JSON line back:
/// `pcrs SELECTION`, `policy-record SELECTION`, `policy-status`, `uefi-seal`
/// (SELECTION: `0-7`, `0,2,7`, `all`).
public final class TrustedLaunchService: Sendable {
    public struct Configuration: Sendable {
        /// The host channel's Unix socket path, if any.
        public var hostSocket: String?
        /// How often the VARS file is compared with what was sealed, and the PCRs are
        /// polled for the policy check (ms).
        public var pollInterval: Int
        /// Check the recorded boot policy once the PCRs it covers have been stable for
        /// `policySettle` ms.
        public var checkPolicy: Bool
        public var policySettle: Int

        public init(hostSocket: String? = nil, pollInterval: Int = 500, checkPolicy: Bool = false, policySettle: Int = 10_000) {
            self.hostSocket = hostSocket
            self.pollInterval = max(10, pollInterval)
            self.checkPolicy = checkPolicy
            self.policySettle = max(0, policySettle)
        }
    }

    /// The result of the policy check in serve, as `policy-status` reports it.
    public struct PolicyStatus: Sendable, Codable, Equatable {
        /// "waiting" (the firmware is still measuring), "pass", "mismatch", "no-policy", "error".
        public var result: String
        public var mismatched: [BootPolicy.Mismatch]
        public var message: String?
    }

    private let configuration: Configuration
    private let storage: ContainerTPMStorage
    public let uefiVars: UEFIVarsFile?
    private let logger: Logger
    private let listener: StreamSocket?
    private let stopRequested = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)
    private let policyStatus = Mutex(PolicyStatus(result: "waiting", mismatched: []))

    public init(configuration: Configuration, storage: ContainerTPMStorage, uefiVars: UEFIVarsFile?, logger: Logger) throws {
        self.configuration = configuration
        self.storage = storage
        self.uefiVars = uefiVars
        self.logger = logger
        listener = try configuration.hostSocket.map { try StreamSocket.listen(.unix(path: $0)) }
    }

    /// Starts the thread.
    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        nonisolated(unsafe) let service = self
        do {
            try BackgroundThread.start(name: "gv-trusted") {
                service.loop()
                service.stopped.signal()
            }
        } catch {
            logger.critical("cannot start the trusted-launch thread: \(error)")
            stopped.signal()
        }
    }

    /// Stops the thread, seals the VARS file a last time and removes it, and removes the
    /// host socket. Only the first call does anything.
    public func finish() throws {
        guard !finished.exchange(true, ordering: .relaxed) else { return }
        stopRequested.store(true, ordering: .relaxed)
        if started.load(ordering: .relaxed) { stopped.wait() }
        if let path = configuration.hostSocket { try? FileSystem.removeFile(path) }
        listener?.close()
        if let uefiVars {
            try uefiVars.finish()
            let (seals, last) = uefiVars.statistics
            logger.info("sealed the UEFI variables and removed \(uefiVars.path)", metadata: ["seals": "\(seals)", "lastSealMicroseconds": "\(Int(last))"])
        }
    }

    private func loop() {
        var nextPoll = Self.milliseconds()
        var watch = PolicyWatch()
        while !stopRequested.load(ordering: .relaxed) {
            let now = Self.milliseconds()
            if now >= nextPoll {
                nextPoll = now + Int64(configuration.pollInterval)
                sealVars()
                if configuration.checkPolicy { watch.step(self, now: now) }
            }
            let wait = Int32(clamping: max(0, min(nextPoll - now, 200)))
            guard let listener else { usleep(UInt32(wait) * 1000); continue }
            guard let ready = try? StreamSocket.poll([listener.descriptor], timeout: wait), !ready.isEmpty else { continue }
            guard let connection = try? listener.accept() else { continue }
            serve(connection)
        }
    }

    private func sealVars() {
        guard let uefiVars else { return }
        do {
            if try uefiVars.sealIfChanged() {
                logger.info("sealed the guest's change of the UEFI variables", metadata: ["microseconds": "\(Int(uefiVars.statistics.lastSealMicroseconds))"])
            }
        } catch {
            logger.error("could not seal the UEFI variables; trying again next poll", metadata: ["error": "\(ErrorChain.message(of: error))"])
        }
    }

    // MARK: Host channel

    static let maximumRequest = 256

    private func serve(_ connection: StreamSocket) {
        defer { connection.close() }
        try? connection.setTimeout(seconds: 2)
        var request: [UInt8] = []
        while !request.contains(UInt8(ascii: "\n")) && request.count <= Self.maximumRequest {
            guard let bytes = try? connection.receive(maximum: Self.maximumRequest + 1 - request.count), !bytes.isEmpty else { break }
            request += bytes
        }
        let reply: [UInt8]
        if let end = request.firstIndex(of: UInt8(ascii: "\n")), end <= Self.maximumRequest {
            let line = String(decoding: request[..<end], as: UTF8.self)
            reply = answer(line)
        } else {
            reply = encode(HostReply(error: "a request is one line of at most \(Self.maximumRequest) bytes", code: "usage"))
        }
        try? connection.send(reply + [UInt8(ascii: "\n")])
    }

    struct HostReply: Codable {
        var ok = true
        var bank: String?
        var pcrs: [String: String]?
        var policy: BootPolicy?
        var status: PolicyStatus?
        var sealed: Bool?
        var error: String?
        var code: String?

        init() {}
        init(error: String, code: String) {
            ok = false
            self.error = error
            self.code = code
        }
    }

    private func encode(_ reply: HostReply) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? Array(encoder.encode(reply))) ?? Array("{\"ok\":false}".utf8)
    }

    private func answer(_ line: String) -> [UInt8] {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        do {
            var reply = HostReply()
            switch (words.first ?? "", words.count) {
            case ("pcrs", 2):
                let values = try Self.readPCRs(BootPolicy.selection(words[1]))
                reply.bank = "sha256"
                reply.pcrs = Dictionary(uniqueKeysWithValues: values.map { (String($0.key), hexString($0.value)) })
            case ("policy-record", 2):
                let policy = BootPolicy(values: try Self.readPCRs(BootPolicy.selection(words[1])))
                try storage.commitEntry(BootPolicy.entryName, try policy.encoded())
                logger.notice("recorded the boot policy", metadata: ["pcrs": "\(policy.pcrs.keys.compactMap { Int($0) }.sorted())"])
                reply.policy = policy
            case ("policy-status", 1):
                reply.status = policyStatus.withLock { $0 }
            case ("uefi-seal", 1):
                guard let uefiVars else { return encode(HostReply(error: "serve runs without --uefi-vars", code: "usage")) }
                reply.sealed = try uefiVars.sealIfChanged()
            default:
                return encode(HostReply(error: "unknown request \"\(line.prefix(40))\"; expected pcrs SELECTION, policy-record SELECTION, policy-status or uefi-seal", code: "usage"))
            }
            return encode(reply)
        } catch {
            let code = ErrorChain.chain(error).compactMap { ($0 as? any GuestVaultError)?.code.name }.first ?? "failure"
            return encode(HostReply(error: ErrorChain.message(of: error), code: code))
        }
    }

    /// The PCRs of the running TPM, read between the guest's commands.
    static func readPCRs(_ selection: Set<Int>) throws -> [Int: [UInt8]] {
        guard let engine = TPMEngine.current() else {
            throw TPMEngineError(.notRunning, "the TPM is not running (QEMU has not initialised it yet, or it is stopped)")
        }
        return try engine.pcrValues(selection)
    }

    // MARK: Policy check

    /// Waits for the policy's PCRs to stop changing (the firmware has finished
    /// measuring), then checks them once; a reset of the TPM (new values) arms it again.
    private struct PolicyWatch {
        var last: [Int: [UInt8]]?
        var stableSince: Int64 = 0
        var checked = false

        mutating func step(_ service: TrustedLaunchService, now: Int64) {
            let policy: BootPolicy
            do {
                guard let bytes = try service.storage.readEntry(BootPolicy.entryName) else {
                    service.policyStatus.withLock { $0 = PolicyStatus(result: "no-policy", mismatched: [], message: "the container holds no boot policy; record one with `guestvault policy record`") }
                    return
                }
                policy = try BootPolicy.decode(bytes)
            } catch {
                service.policyStatus.withLock { $0 = PolicyStatus(result: "error", mismatched: [], message: ErrorChain.message(of: error)) }
                return
            }
            guard let selection = try? Set(policy.values().keys), let values = try? TrustedLaunchService.readPCRs(selection) else { return }
            if values != last || !checked && service.policyStatus.withLock({ $0.result != "waiting" }) {
                service.policyStatus.withLock { $0 = PolicyStatus(result: "waiting", mismatched: []) }
                last = values
                stableSince = now
                checked = false
                return
            }
            guard !checked, now - stableSince >= Int64(service.configuration.policySettle),
                  values.values.contains(where: { $0.contains { $0 != 0 } }) else { return }
            checked = true
            do {
                let mismatched = try policy.mismatches(current: values)
                if mismatched.isEmpty {
                    service.policyStatus.withLock { $0 = PolicyStatus(result: "pass", mismatched: []) }
                    service.logger.notice("boot policy: pass", metadata: ["pcrs": "\(selection.sorted())"])
                } else {
                    service.policyStatus.withLock { $0 = PolicyStatus(result: "mismatch", mismatched: mismatched) }
                    service.logger.critical("boot policy: MISMATCH in PCR \(mismatched.map { String($0.pcr) }.joined(separator: ", "))",
                                            metadata: ["mismatched": "\(mismatched.map(\.pcr))"])
                }
            } catch {
                service.policyStatus.withLock { $0 = PolicyStatus(result: "error", mismatched: [], message: ErrorChain.message(of: error)) }
            }
        }
    }

    static func milliseconds() -> Int64 {
        Int64(clamping: DispatchTime.now().uptimeNanoseconds / 1_000_000)
    }
}
