import Dispatch
import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import Logging

/// `swtpm socket ...`: serves a VM's TPM from its sealed container, with swtpm 0.7's
/// flags translated into the serve configuration (docs/LIBVIRT.md).
enum SwtpmFrontEnd {
    static let program = "swtpm"

    static let capabilities = #"{ "type": "swtpm", "features": [ "tpm-2.0", "cmdarg-key-fd", "cmdarg-pwd-fd", "cmdarg-print-states", "cmdarg-migration", "flags-opt-startup" ], "version": "0.7.1" }"#

    static let valued: Set<String> = ["tpmstate", "ctrl", "server", "log", "pid", "key", "migration-key", "migration", "flags", "runas"]
    static let flags: Set<String> = ["tpm2", "terminate", "daemon", "print-capabilities", "print-states", "version", "help"]

    /// The migration-related flags, kept as parsed until `serve` has fields for them.
    struct MigrationOptions {
        /// `--migration-key` as swtpm spells it (pwdfd=N,mode=...).
        var migrationKey: String?
        /// `--migration release-lock-outgoing`.
        var releaseLockOutgoing = false
        /// `--migration incoming`.
        var incoming = false
    }

    static func run(_ arguments: [String]) throws -> Int32 {
        let args = try FrontEndArguments(arguments, program: program, valued: valued, flags: flags)
        if args.has("help") { print(help); return 0 }
        if args.has("version") { print("TPM emulator version 0.7.1 (GuestVault \(GuestVaultVersion.string))"); return 0 }
        guard args.positionals.first == "socket", args.positionals.count == 1 else {
            throw FrontEndError(.frontEndUnsupported, "\(program): only `swtpm socket` is supported (not \(args.positionals.joined(separator: " ")))")
        }
        if args.has("print-capabilities") { print(capabilities); return 0 }
        guard args.has("tpm2") else {
            throw FrontEndError(.frontEndUnsupported, "\(program): only TPM 2.0 is supported; pass --tpm2")
        }
        guard let stateText = args.value("tpmstate") else { throw FrontEndError.usage(program, "--tpmstate dir=DIR is required") }
        let stateOption = try KeyValueOption(stateText, option: "--tpmstate", program: program, allowed: ["dir", "mode", "backend-uri", "lock"])
        let location: FrontEndStateLocation
        if let directory = stateOption["dir"] {
            location = try FrontEndStateLocation(directory: directory, program: program)
        } else {
            location = try FrontEndStateLocation(uri: try stateOption.required("backend-uri", program: program), program: program)
        }
        if args.has("print-states") { print(try location.statesJSON()); return 0 }

        if args.has("daemon") && Environment.value(daemonChildVariable) == nil {
            return try FrontEndDaemon.spawnAndWait(program: program, arguments: arguments.filter { $0 != "--daemon" })
        }
        if let runas = args.value("runas") { try FrontEndEnvironment.runAs(runas, program: program) }

        let control = try controlAddress(args.value("ctrl"))
        let data = try args.value("server").map { try serverAddress($0) }
        let flagSet = Set((args.value("flags") ?? "").split(separator: ",").map(String.init))
        let unknownFlags = flagSet.subtracting(["not-need-init", "startup-clear"])
        guard unknownFlags.isEmpty else {
            throw FrontEndError.usage(program, "--flags \(unknownFlags.sorted().joined(separator: ",")) is not supported (not-need-init, startup-clear are)")
        }
        var logLevel = Logger.Level.info
        var logFile: String?
        if let log = args.value("log") {
            let option = try KeyValueOption(log, option: "--log", program: program, allowed: ["file", "level", "prefix", "truncate"])
            logFile = option["file"]
            if let level = option["level"].flatMap(Int.init), level >= 5 { logLevel = .debug }
        }
        var logger = try FrontEndEnvironment.logger(program: program, file: logFile, level: logLevel)
        let pidFile = try args.value("pid").map { text -> String in
            try KeyValueOption(text, option: "--pid", program: program, allowed: ["file"]).required("file", program: program)
        }

        // libvirt's VM secret: the state key swtpm would use (an additional protector of
        // the container, and the key of swtpm state being imported).
        var secret: SecretBytes?
        var swtpmKey: SwtpmKey?
        if let key = args.value("key") {
            let option = try KeyValueOption(key, option: "--key", program: program, allowed: ["pwdfd", "mode", "kdf", "file", "fd", "pwdfile", "format", "remove"])
            guard let fd = option["pwdfd"] else {
                throw FrontEndError(.frontEndUnsupported, "\(program): --key supports pwdfd=N (what libvirt passes); the vault seals the state")
            }
            secret = try FrontEndEnvironment.readSecret(fd: fd, option: "--key pwdfd", program: program)
            let mode = SwtpmKey.Mode(swtpmName: option["mode"] ?? "aes-128-cbc") ?? .swtpmDefault
            swtpmKey = try SwtpmKey.fromPassphrase(secret!, kdf: option["kdf"] == "sha512" ? .sha512 : .pbkdf2, mode: mode, file: "libvirt secret")
        }
        let migration = try migrationOptions(args)

        let vault = try FrontEndEnvironment.openVault()
        let container: GuestStateContainer
        if location.hasContainer {
            container = try location.open(vault: vault)
            if let secret { try FrontEndSecret.check(secret, container: container, path: location.container, program: program, logger: logger) }
        } else if location.hasSwtpmState {
            container = try location.importSwtpmState(vm: location.impliedVM ?? UUID(), vault: vault, secret: secret, key: swtpmKey, logger: logger)
        } else {
            // As swtpm: an empty state directory gets a new TPM (made at the first CMD_INIT).
            container = try location.create(vm: location.impliedVM ?? UUID(), vault: vault, secret: secret)
            logger.notice("no TPM state in \(location.container): a new TPM is made at its first start")
        }
        logger[metadataKey: "vm"] = "\(container.vm.uuidString.lowercased())"
        let vm = container.vm
        let storage = ContainerTPMStorage(container: container, vault: vault)
        // The UEFI variables (libvirt's <nvram> on tmpfs) exist before QEMU starts, and are
        // sealed and removed on every way out (SwtpmFrontEnd+UEFI.swift).
        let uefi = try startUEFIVariables(storage: storage, vm: vm, logger: logger)
        defer {
            do { try uefi?.finish() } catch {
                logger.error("could not seal the UEFI variables a last time; the plaintext was removed", metadata: ["error": "\(ErrorChain.message(of: error))"])
            }
        }
        var configuration = TPMServer.Configuration(
            dataAddress: data?.address, controlAddress: control.address,
            notNeedInit: flagSet.contains("not-need-init"), startupClear: flagSet.contains("startup-clear"))
        configuration.terminateWhenControlCloses = args.has("terminate")
        try handOver(migration, to: &configuration, logger: logger)
        StopSignals.install()
        let server = try TPMServer(storage: storage, configuration: configuration, logger: logger, migrationHost: storage,
                                   externalStop: StopSignals.isRequested)
        for (address, mode) in [control, data].compactMap({ $0 }) {
            if case .unix(let path) = address, let mode { _ = chmod(path, mode) }
        }
        if let pidFile { try DurableFile.write(Array("\(getpid())\n".utf8), to: pidFile, mode: 0o600, .replacing) }

        StopSignals.forward(to: server)
        logger.info("serving the sealed TPM state \(location.container) on \(control.address)\(args.has("terminate") ? " (--terminate)" : "")")
        FrontEndDaemon.reportReady()
        defer {
            // swtpm removes its sockets and pid file when it ends; libvirt relies on it.
            for address in [control, data].compactMap({ $0?.address }) {
                if case .unix(let path) = address { unlink(path) }
            }
            if let pidFile { unlink(pidFile) }
        }
        try server.run()
        try storage.flush()
        logger.info("stopped; the TPM state is committed to \(location.container)")
        return 0
    }

    /// Hands the migration flags over to the serve configuration (the fields `serve
    /// --migration-key`, `--migration` set). Without a migration key the state blobs go out
    /// in plaintext, as swtpm's do when libvirt has no VM secret to give it: the
    /// destination of a libvirt migration has a new container (swtpm_setup --overwrite),
    /// so it could not open blobs sealed under this one's key. The control socket is
    /// libvirt's 0600 Unix socket. With a VM secret, libvirt passes --migration-key and the
    /// blobs are encrypted with it, as swtpm does (docs/LIBVIRT.md).
    static func handOver(_ migration: MigrationOptions, to configuration: inout TPMServer.Configuration, logger: Logger) throws {
        var settings = TPMServer.Migration()
        if let key = migration.migrationKey {
            do {
                settings.key = try MigrationKeySpec(parsing: key)
            } catch {
                throw FrontEndError.usage(program, "--migration-key: \(ErrorChain.message(of: error))")
            }
        } else {
            settings.allowPlaintext = true
        }
        settings.releaseLockOutgoing = migration.releaseLockOutgoing
        settings.incoming = migration.incoming
        configuration.migration = settings
        logger.info("migration: \(migration.migrationKey != nil ? "state blobs encrypted with the migration key" : "no migration key: state blobs in plaintext, as swtpm's"), release-lock-outgoing \(migration.releaseLockOutgoing), incoming \(migration.incoming)")
    }

    static func migrationOptions(_ args: FrontEndArguments) throws -> MigrationOptions {
        var options = MigrationOptions()
        if let key = args.value("migration-key") {
            _ = try KeyValueOption(key, option: "--migration-key", program: program, allowed: ["pwdfd", "fd", "file", "pwdfile", "mode", "kdf", "format", "remove"])
            // The server reads the key (or the descriptor) itself, as serve --migration-key does.
            options.migrationKey = key
        }
        if let text = args.value("migration") {
            let option = try KeyValueOption(text, option: "--migration", program: program, allowed: ["release-lock-outgoing", "incoming"])
            options.releaseLockOutgoing = option.has("release-lock-outgoing")
            options.incoming = option.has("incoming")
        }
        return options
    }

    /// `--ctrl type=unixio,path=P[,mode=M]` or `type=tcp,port=N[,bindaddr=A]`.
    static func controlAddress(_ text: String?) throws -> (address: StreamSocket.Address, mode: mode_t?) {
        guard let text else { throw FrontEndError.usage(program, "--ctrl type=unixio,path=SOCK is required") }
        return try address(text, option: "--ctrl")
    }

    static func serverAddress(_ text: String) throws -> (address: StreamSocket.Address, mode: mode_t?) {
        try address(text, option: "--server")
    }

    static func address(_ text: String, option name: String) throws -> (address: StreamSocket.Address, mode: mode_t?) {
        let option = try KeyValueOption(text, option: name, program: program, allowed: ["type", "path", "mode", "port", "bindaddr", "disconnect", "uid", "gid"])
        if option.has("uid") || option.has("gid") {
            throw FrontEndError(.frontEndUnsupported, "\(program): \(name) uid=/gid= are not supported; run as the user that connects")
        }
        switch option["type"] ?? "tcp" {
        case "unixio":
            let path = try option.required("path", program: program)
            var mode: mode_t?
            if let text = option["mode"] {
                guard let parsed = mode_t(text, radix: 8), parsed & ~0o777 == 0 else { throw FrontEndError.usage(program, "\(name) mode=\(text) is not an octal mode") }
                mode = parsed
            }
            return (.unix(path: path), mode)
        case "tcp":
            guard let port = UInt16(try option.required("port", program: program)) else { throw FrontEndError.usage(program, "\(name) port= is not a port number") }
            return (.tcp(host: option["bindaddr"] ?? "127.0.0.1", port: port), nil)
        case let other:
            throw FrontEndError(.frontEndUnsupported, "\(program): \(name) type=\(other) is not supported (unixio, tcp are)")
        }
    }

    static let daemonChildVariable = "GUESTVAULT_SWTPM_DAEMON_CHILD"

    static let help = """
        Usage: swtpm socket --tpm2 --tpmstate dir=DIR[,mode=0600]|backend-uri=dir://DIR|file://FILE
                            --ctrl type=unixio,path=SOCK[,mode=0600]|type=tcp,port=N [options]
        GuestVault's swtpm: serves the VM's TPM from its sealed container (docs/LIBVIRT.md).
          --server type=tcp,port=N|type=unixio,path=P   --flags not-need-init,startup-clear
          --log file=F[,level=N]  --pid file=F  --terminate  --daemon  --runas USER
          --key pwdfd=N,mode=aes-256-cbc  --migration-key pwdfd=N,mode=aes-256-cbc
          --migration release-lock-outgoing,incoming  --print-capabilities  --print-states
        The vault: $GUESTVAULT_VAULT, or \(FrontEndEnvironment.defaultVault).
        """
}
