public import ArgumentParser
import Dispatch
import Foundation
import GuestVaultCore
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import Logging
import Synchronization

public struct Serve: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Run a VM's vTPM from its sealed container, speaking swtpm's socket interface.",
        discussion: """
            One process serves one VM, as swtpm does. The data channel (--server) carries TPM
            commands; the control channel (--ctrl) swtpm's control commands, including
            SET_DATAFD with the descriptor passed over a Unix socket, so QEMU and tpm2-tools
            work unchanged. Every NV write is committed to the container before the TPM
            answers. SIGTERM (or SIGINT) stores the volatile state, commits, and exits 0.

            Logging: one line per record with the VM's id, to standard error, or appended to
            --log-file (created 0600; a symlink or another user's file is refused). The level
            is --log-level (default: warning; --verbose is --log-level debug).

            Migration (docs/SWTPM-PROTOCOL.md, section 9; docs/MIGRATION-BLOB.md): GET_STATEBLOB
            hands out the TPM's state sealed with AES-256-GCM under a key derived from the
            container's DEK, bound to the VM, container, blob type and generation; only a host
            holding this container (or sent it) can open it, and SET_STATEBLOB accepts only
            such blobs, refusing older blob sets as a rollback. --migration-key uses swtpm's
            migration key instead (for migrating to or from swtpm with the same key);
            --allow-plaintext-migration hands out and accepts plaintext blobs (an swtpm
            without a key). --migration incoming,release-lock-outgoing hands the container's
            writer lock over for shared storage, as swtpm 0.8 does.
            The control channel is unauthenticated: keep it a Unix socket (0600); a TCP
            control channel needs an explicit address and reaches anyone on that host.

            Limits (docs/SWTPM-PROTOCOL.md, section 8): at most --max-control-connections
            control clients at once (others wait in the backlog), a control request must
            arrive whole within --request-timeout ms, a client must take its reply within
            --write-timeout ms; otherwise that client is disconnected and the TPM goes on.

            Examples:
              guestvault serve --vault DIR vm1.state --ctrl unix:/run/vm1-tpm.sock
                  (QEMU: -chardev socket,id=chrtpm,path=/run/vm1-tpm.sock
                         -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0)
              guestvault serve --vault DIR vm1.state --server tcp:127.0.0.1:2321 \\
                  --ctrl tcp:127.0.0.1:2322 --flags not-need-init,startup-clear
                  (tpm2-tools: TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=2321)
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container with the VM's TPM (made with `guestvault create --tpm`).", valueName: "state"))
    var state: String

    @Option(help: ArgumentHelp("The TPM data channel: tcp:HOST:PORT or unix:PATH (optional with QEMU, which passes it over --ctrl).", valueName: "address"))
    var server: String?

    @Option(help: ArgumentHelp("The control channel: tcp:HOST:PORT or unix:PATH.", valueName: "address"))
    var ctrl: String

    @Option(help: ArgumentHelp("Comma-separated: not-need-init (start the TPM without CMD_INIT), startup-clear (send TPM2_Startup(CLEAR)).", valueName: "flags"))
    var flags: String = ""

    @Flag(help: "Open even if the vault has seen a newer generation of this VM.")
    var allowRollback = false

    @Flag(help: "Log every control command (the same as --log-level debug).")
    var verbose = false

    @Option(help: ArgumentHelp("In a cluster (docs/CLUSTER.md): wait up to this many seconds for another member's lease on the VM to end.", valueName: "s"))
    var clusterWait: Int?

    @Option(help: ArgumentHelp("The least level logged: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String?

    @Option(help: ArgumentHelp("Append the log to this file instead of standard error (created 0600).", valueName: "path"))
    var logFile: String?

    @Option(help: ArgumentHelp("Control connections served at once.", valueName: "count"))
    var maxControlConnections: Int = TPMServer.Limits().maximumControlConnections

    @Option(help: ArgumentHelp("Milliseconds a control request may take to arrive whole.", valueName: "ms"))
    var requestTimeout: Int32 = TPMServer.Limits().requestTimeout

    @Option(help: ArgumentHelp("Milliseconds a client may take to read a reply.", valueName: "ms"))
    var writeTimeout: Int32 = TPMServer.Limits().writeTimeout

    @Option(help: ArgumentHelp("swtpm's migration key: file=PATH|fd=N|pwdfile=PATH|pwdfd=N[,mode=aes-128-cbc|aes-256-cbc][,format=hex|binary][,kdf=sha512|pbkdf2]. State blobs leave encrypted with it as swtpm does, and swtpm's are accepted.", valueName: "spec"))
    var migrationKey: String?

    @Flag(help: "Hand out and accept plaintext state blobs (for an swtpm without a migration key). Logged.")
    var allowPlaintextMigration = false

    @Option(help: ArgumentHelp("swtpm's --migration: incoming (take the container's writer lock only when the state arrives), release-lock-outgoing (give it up once QEMU took the state). For shared storage.", valueName: "options"))
    var migration: String?

    /// The migration settings of the server from the options (the swtpm front ends set
    /// the same fields of ``TPMServer/Migration``).
    func migrationSettings() throws -> TPMServer.Migration {
        var settings = TPMServer.Migration(allowPlaintext: allowPlaintextMigration)
        if let migrationKey {
            do { settings.key = try MigrationKeySpec(parsing: migrationKey) } catch { throw ValidationError(ErrorChain.message(of: error)) }
        }
        if let migration {
            do { try settings.parseSwtpmMigrationOption(migration) } catch { throw ValidationError(ErrorChain.message(of: error)) }
        }
        return settings
    }

    // Trusted launch (TrustedLaunchCommands.swift, docs/TRUSTED-LAUNCH.md).
    @Option(help: ArgumentHelp("Give QEMU the VM's UEFI variables as this pflash file: made from the container's uefi.vars (on tmpfs, 0600), sealed back when it changes and at stop, then removed.", valueName: "path"))
    var uefiVars: String?

    @Option(help: ArgumentHelp("Milliseconds between checks of the --uefi-vars file for changes (the window a host crash can lose, plus one commit).", valueName: "ms"))
    var uefiPoll: Int = 500

    @Option(help: ArgumentHelp("A host-only Unix socket (0600) for `guestvault pcrs`, `policy record` and `policy check` while the VM runs.", valueName: "path"))
    var hostSocket: String?

    @Flag(help: "Check the recorded boot policy once the firmware has finished measuring (its PCRs stable for --policy-settle ms); a mismatch is logged at critical.")
    var checkPolicy = false

    @Option(help: ArgumentHelp("With --check-policy: milliseconds the PCRs must stay unchanged before they are checked.", valueName: "ms"))
    var policySettle: Int = 10_000

    /// The logger the CLI chooses: a line per record, to standard error or the log file.
    func makeLogger() throws -> Logger {
        let level: Logger.Level
        if let logLevel {
            guard let parsed = Logger.Level(rawValue: logLevel) else {
                throw ValidationError("--log-level \(logLevel) is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            level = parsed
        } else {
            level = verbose ? .debug : .warning
        }
        let sink: LineLogHandler.Sink = try logFile.map { .file(try SafeOpen.appendLog($0)) } ?? .standardError
        let handler = LineLogHandler(label: "guestvault serve[\(getpid())]", sink: sink, level: level)
        return Logger(label: "guestvault.serve") { _ in handler }
    }

    public init() {}

    public func run() throws {
        guard let control = StreamSocket.Address(ctrl) else { throw ValidationError("--ctrl \(ctrl) is not tcp:HOST:PORT or unix:PATH") }
        let data = try server.map { text -> StreamSocket.Address in
            guard let address = StreamSocket.Address(text) else { throw ValidationError("--server \(text) is not tcp:HOST:PORT or unix:PATH") }
            return address
        }
        let flagSet = Set(flags.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let unknown = flagSet.subtracting(["not-need-init", "startup-clear", ""])
        guard unknown.isEmpty else { throw ValidationError("unknown --flags: \(unknown.sorted().joined(separator: ", "))") }

        guard maxControlConnections >= 1, requestTimeout >= 1, writeTimeout >= 1 else {
            throw ValidationError("--max-control-connections, --request-timeout and --write-timeout must be at least 1")
        }
        let migrationSettings = try migrationSettings()
        // Catch SIGTERM/SIGINT before any socket listens: a supervisor that sees the
        // sockets may stop us at once, and that request must not be lost.
        StopSignals.install()
        var logger = try makeLogger()
        // In a cluster the session takes the VM's lease and gives the server a storage
        // whose commits are visible only while this member owns the VM; on lease loss
        // the server stops (fail-stop). Live migration is not offered there (yet).
        let stopper = ServerStopper()
        let failureLogger = logger
        let cluster = try ServeCluster.session(state: state, vault: vault, wait: clusterWait,
                                               incomingMigration: migrationSettings.incoming) { reason in
            failureLogger.critical("\(reason)")
            stopper.stop()
        }
        let storage: any TPMStateStorage
        var plain: ContainerTPMStorage?
        if let cluster {
            logger[metadataKey: "vm"] = "\(cluster.vmLabel)"
            storage = cluster.tpmStorage
        } else {
            // An incoming migration on shared storage does not take the writer lock until the
            // state arrives (the source still holds it).
            let container = try GuestStateContainer.open(at: state, access: migrationSettings.incoming ? .readOnly : .readWrite)
            let keyVault = try vault.open()
            try container.unlock(with: UnlockCredentials(vault: keyVault), allowRollback: allowRollback)
            guard container.entryNames.contains(EntryName.tpmPermanent) else {
                throw ValidationError("\(state) holds no TPM yet; make one with `guestvault create --tpm`")
            }
            logger[metadataKey: "vm"] = "\(container.info.vm.uuidString.lowercased())"
            let containerStorage = ContainerTPMStorage(container: container, vault: keyVault)
            plain = containerStorage
            storage = containerStorage
        }
        let limits = TPMServer.Limits(maximumControlConnections: maxControlConnections, requestTimeout: requestTimeout,
                                      writeTimeout: writeTimeout)
        // Trusted launch: the VARS file exists before the control socket, so a QEMU started
        // when the socket appears finds it; finished (sealed, removed) on every way out.
        let trusted: TrustedLaunchService?
        if let plain {
            trusted = try makeTrustedLaunch(storage: plain, logger: logger)
        } else {
            guard uefiVars == nil, hostSocket == nil, !checkPolicy else {
                throw ValidationError("--uefi-vars, --host-socket and --check-policy are not offered for a VM in a cluster yet")
            }
            trusted = nil
        }
        defer { try? trusted?.finish() }
        let server = try TPMServer(
            storage: storage,
            configuration: .init(dataAddress: data, controlAddress: control,
                                 notNeedInit: flagSet.contains("not-need-init"), startupClear: flagSet.contains("startup-clear"),
                                 limits: limits, migration: migrationSettings),
            logger: logger, migrationHost: plain)
        stopper.set(server)
        // A SIGTERM that came while the server was being set up (its sockets already
        // listen, so a supervisor may send one) is acted on now; later ones by the watcher.
        StopSignals.forward(to: server)
        if case .tcp = control {
            logger.warning("the control channel is TCP \(control): it is unauthenticated; anyone who can reach it can stop or reset the TPM (state blobs on it stay sealed\(migrationSettings.allowPlaintext ? ", except: --allow-plaintext-migration is on" : ""))")
        }
        if migrationSettings.allowPlaintext {
            logger.warning("--allow-plaintext-migration: the TPM's state blobs leave and enter in plaintext on the control channel")
        }

        logger.info("serving \(state) on ctrl \(control)\(data.map { ", data \($0)" } ?? "")")
        defer { cluster?.release() }
        try server.run()
        try trusted?.finish()
        try plain?.flush()
        if let reason = cluster?.stopError { throw reason }
    }
}

/// SIGTERM and SIGINT for `serve`: a handler installed first thing records the request
/// (an atomic store, async-signal-safe); a watcher thread hands it to the server once
/// the server exists, so a signal that arrives while the server is being set up is
/// never lost (nor does it kill the process before the volatile state is stored).
public enum StopSignals {
    static let requested = Atomic<Bool>(false)

    static func install() {
        signal(SIGPIPE, SIG_IGN)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in StopSignals.requested.store(true, ordering: .releasing) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        sigaction(SIGTERM, &action, nil)
        sigaction(SIGINT, &action, nil)
        // A parent may have started us with these signals blocked (a child inherits the
        // mask of the thread that spawned it: a test runner's worker thread, a
        // supervisor's); blocked, a stop would stay pending for ever.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    static func forward(to server: TPMServer) {
        // requestStop() is an atomic store, safe from any thread.
        nonisolated(unsafe) let target = server
        let thread = Thread {
            while !StopSignals.requested.load(ordering: .acquiring) { usleep(20_000) }
            target.requestStop()
        }
        thread.start()
    }
}
