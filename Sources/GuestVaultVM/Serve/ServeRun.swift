import ArgumentParser
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

// What `serve` does with its settings (Serve.swift has the options and their help).

extension ServeSettings {
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

    /// Serves the VM until a stop (SIGTERM, SIGINT, the control channel's shutdown).
    public func run() throws {
        guard let control = StreamSocket.Address(ctrl) else { throw ValidationError("--ctrl \(ctrl) is not tcp:HOST:PORT or unix:PATH") }
        let data = try server.map { text -> StreamSocket.Address in
            guard let address = StreamSocket.Address(text) else { throw ValidationError("--server \(text) is not tcp:HOST:PORT or unix:PATH") }
            return address
        }
        let flagSet = Set(flags.split(separator: ",").map { $0.trimmingWhitespace() })
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
            logger: logger, migrationHost: plain, externalStop: StopSignals.isRequested)
        stopper.set(server)
        // A SIGTERM that came while the server was being set up (its sockets already
        // listen, so a supervisor may send one) is acted on now; later ones wake the loop.
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
