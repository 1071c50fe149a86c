public import ArgumentParser
import Dispatch
import FoundationEssentials
import Glibc
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

    public init() {}

    /// The options as plain values.
    public var settings: ServeSettings {
        var settings = ServeSettings(state: state, ctrl: ctrl)
        settings.vault = vault.selection
        settings.server = server
        settings.flags = flags
        settings.allowRollback = allowRollback
        settings.verbose = verbose
        settings.clusterWait = clusterWait
        settings.logLevel = logLevel
        settings.logFile = logFile
        settings.maxControlConnections = maxControlConnections
        settings.requestTimeout = requestTimeout
        settings.writeTimeout = writeTimeout
        settings.migrationKey = migrationKey
        settings.allowPlaintextMigration = allowPlaintextMigration
        settings.migration = migration
        settings.uefiVars = uefiVars
        settings.uefiPoll = uefiPoll
        settings.hostSocket = hostSocket
        settings.checkPolicy = checkPolicy
        settings.policySettle = policySettle
        return settings
    }

    public func run() throws {
        try settings.run()
    }
}

/// SIGTERM and SIGINT for `serve` and the swtpm front end: a handler installed first
/// thing records the request (an atomic store) and, once the server exists, wakes its
/// loop (one write(2) to its wake-up descriptor); both are async-signal-safe. A signal
/// that arrives while the server is being set up is acted on when it is handed over
/// (``forward(to:)``), so it is never lost, nor does it kill the process before the
/// volatile state is stored. No thread polls for it: an idle server makes no system call.
public enum StopSignals {
    static let requested = Atomic<Bool>(false)
    /// The running server's wake-up descriptor; -1 until there is a server.
    static let wakeDescriptor = Atomic<Int32>(-1)
    /// The wake-ups handed to the handler, kept open until the process ends: a handler
    /// that loaded the descriptor just before a server went away must not write into a
    /// descriptor number that the kernel has given to another file since.
    private static let handedOver = Mutex<[WakeupEvent]>([])

    /// The server's check for a stop asked by a signal (``TPMServer``'s `externalStop`).
    static let isRequested: @Sendable () -> Bool = { StopSignals.requested.load(ordering: .acquiring) }

    static func install() {
        // Both statics are initialised here, before a handler could be the first to touch them.
        _ = requested.load(ordering: .relaxed)
        _ = wakeDescriptor.load(ordering: .relaxed)
        signal(SIGPIPE, SIG_IGN)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            StopSignals.requested.store(true, ordering: .releasing)
            let descriptor = StopSignals.wakeDescriptor.load(ordering: .acquiring)
            if descriptor >= 0 { WakeupEvent.signal(descriptor) }
        }
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

    /// Hands later signals to `server` (made with `externalStop: StopSignals.isRequested`)
    /// and acts on one that came before.
    static func forward(to server: TPMServer) {
        let wakeup = server.wakeup
        handedOver.withLock { $0.append(wakeup) }
        wakeDescriptor.store(wakeup.signalDescriptor, ordering: .releasing)
        if requested.load(ordering: .acquiring) { server.requestStop() }
    }
}
