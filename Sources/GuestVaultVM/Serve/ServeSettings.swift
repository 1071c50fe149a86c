import GuestVaultTPM

/// `serve`'s options as plain values: what ``Serve`` gets from ArgumentParser, or what
/// ``quickParse(_:)`` reads directly. The defaults are ``Serve``'s.
public struct ServeSettings: Equatable, Sendable {
    public var vault = VaultSelection()
    public var state: String
    public var server: String?
    public var ctrl: String
    public var flags = ""
    public var allowRollback = false
    public var verbose = false
    public var clusterWait: Int?
    public var logLevel: String?
    public var logFile: String?
    public var maxControlConnections = TPMServer.Limits().maximumControlConnections
    public var requestTimeout = TPMServer.Limits().requestTimeout
    public var writeTimeout = TPMServer.Limits().writeTimeout
    public var migrationKey: String?
    public var allowPlaintextMigration = false
    public var migration: String?
    public var uefiVars: String?
    public var uefiPoll = 500
    public var hostSocket: String?
    public var checkPolicy = false
    public var policySettle = 10_000

    public init(state: String, ctrl: String) {
        self.state = state
        self.ctrl = ctrl
    }
}

extension ServeSettings {
    /// Reads `serve`'s command line without ArgumentParser, for the forms a supervisor or
    /// a script writes: `--name value`, `--name=value`, the flags, and the one positional
    /// `<state>`. ArgumentParser builds its view of a command by reflection, which costs
    /// about a third of serve's start (docs/PERFORMANCE.md); serve starts once per VM.
    /// Returns nil for anything else (help, an unknown option, a value that looks like an
    /// option, an empty `--name=`, a number that does not parse, a missing `--ctrl` or `<state>`, a second
    /// positional, `--`): ArgumentParser then parses the line and gives its messages.
    /// ServeArgumentsTests checks that whatever this accepts, ArgumentParser reads the same.
    public static func quickParse(_ arguments: [String]) -> ServeSettings? {
        var settings = ServeSettings(state: "", ctrl: "")
        var state: String?, ctrl: String?
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else {
                // The positional <state>: once, and not something ArgumentParser would read
                // as a short option.
                guard state == nil, !argument.hasPrefix("-") else { return nil }
                state = argument
                continue
            }
            let (name, inlineValue) = FrontEndArguments.splitLongOption(argument)
            if settings.setFlag(name) {
                guard inlineValue == nil else { return nil }
                continue
            }
            guard Self.optionNames.contains(name) else { return nil }
            let value: String
            if let inlineValue {
                // ArgumentParser reads `--name=` as a missing value.
                guard !inlineValue.isEmpty else { return nil }
                value = inlineValue
            } else {
                guard index < arguments.count, !arguments[index].hasPrefix("-") else { return nil }
                value = arguments[index]
                index += 1
            }
            if name == "ctrl" { ctrl = value }
            guard settings.setOption(name, value) else { return nil }
        }
        guard let state, let ctrl else { return nil }
        settings.state = state
        settings.ctrl = ctrl
        return settings
    }

    /// Sets the flag `name`; false when `name` is no flag of serve's. (A switch, not a
    /// table of closures: building one costs more at start than the whole parse.)
    private mutating func setFlag(_ name: String) -> Bool {
        switch name {
        case "allow-rollback": allowRollback = true
        case "verbose": verbose = true
        case "allow-plaintext-migration": allowPlaintextMigration = true
        case "check-policy": checkPolicy = true
        default: return false
        }
        return true
    }

    private static let optionNames: Set<String> = [
        "vault", "passphrase-file", "recovery-key", "recovery-passphrase-file", "server", "ctrl", "flags", "log-level", "log-file",
        "migration-key", "migration", "uefi-vars", "host-socket", "cluster-wait", "max-control-connections", "request-timeout",
        "write-timeout", "uefi-poll", "policy-settle",
    ]

    /// Stores `value` for the option `name` (one of ``optionNames``); false when it does
    /// not parse as the option's number.
    private mutating func setOption(_ name: String, _ value: String) -> Bool {
        switch name {
        case "vault": vault.vaultPath = value
        case "passphrase-file": vault.passphraseFile = value
        case "recovery-key": vault.recoveryKeyFiles.append(value)
        case "recovery-passphrase-file": vault.recoveryPassphraseFile = value
        case "server": server = value
        case "ctrl": ctrl = value
        case "flags": flags = value
        case "log-level": logLevel = value
        case "log-file": logFile = value
        case "migration-key": migrationKey = value
        case "migration": migration = value
        case "uefi-vars": uefiVars = value
        case "host-socket": hostSocket = value
        case "cluster-wait": guard let number = Int(value) else { return false }; clusterWait = number
        case "max-control-connections": guard let number = Int(value) else { return false }; maxControlConnections = number
        case "request-timeout": guard let number = Int32(value) else { return false }; requestTimeout = number
        case "write-timeout": guard let number = Int32(value) else { return false }; writeTimeout = number
        case "uefi-poll": guard let number = Int(value) else { return false }; uefiPoll = number
        case "policy-settle": guard let number = Int(value) else { return false }; policySettle = number
        default: return false
        }
        return true
    }
}
