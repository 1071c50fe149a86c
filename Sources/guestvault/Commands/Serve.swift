import ArgumentParser
import Dispatch
import Foundation
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import Logging

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
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

    func run() throws {
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
        var logger = try makeLogger()
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: UnlockCredentials(vault: vault.open()), allowRollback: allowRollback)
        guard container.entryNames.contains(EntryName.tpmPermanent) else {
            throw ValidationError("\(state) holds no TPM yet; make one with `guestvault create --tpm`")
        }
        logger[metadataKey: "vm"] = "\(container.info.vm.uuidString.lowercased())"
        let storage = ContainerTPMStorage(container: container)
        let limits = TPMServer.Limits(maximumControlConnections: maxControlConnections, requestTimeout: requestTimeout,
                                      writeTimeout: writeTimeout)
        let server = try TPMServer(
            storage: storage,
            configuration: .init(dataAddress: data, controlAddress: control,
                                 notNeedInit: flagSet.contains("not-need-init"), startupClear: flagSet.contains("startup-clear"),
                                 limits: limits),
            logger: logger)

        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        let queue = DispatchQueue(label: "guestvault.signals")
        let sources = [SIGTERM, SIGINT].map { DispatchSource.makeSignalSource(signal: $0, queue: queue) }
        for source in sources {
            source.setEventHandler { server.requestStop() }
            source.resume()
        }
        logger.info("serving \(state) on ctrl \(control)\(data.map { ", data \($0)" } ?? "")")
        try server.run()
        try storage.flush()
        for source in sources { source.cancel() }
    }
}
