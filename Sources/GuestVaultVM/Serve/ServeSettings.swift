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
            var name = String(argument.dropFirst(2))
            var inlineValue: String?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if let flag = flagSetters[name] {
                guard inlineValue == nil else { return nil }
                flag(&settings)
                continue
            }
            guard let setter = optionSetters[name] else { return nil }
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
            guard setter(&settings, value) else { return nil }
        }
        guard let state, let ctrl else { return nil }
        settings.state = state
        settings.ctrl = ctrl
        return settings
    }

    private static let flagSetters: [String: @Sendable (inout ServeSettings) -> Void] = [
        "allow-rollback": { $0.allowRollback = true },
        "verbose": { $0.verbose = true },
        "allow-plaintext-migration": { $0.allowPlaintextMigration = true },
        "check-policy": { $0.checkPolicy = true },
    ]

    /// Each option by its long name: stores the value, false when it does not parse.
    private static let optionSetters: [String: @Sendable (inout ServeSettings, String) -> Bool] = [
        "vault": { $0.vault.vaultPath = $1; return true },
        "passphrase-file": { $0.vault.passphraseFile = $1; return true },
        "recovery-key": { $0.vault.recoveryKeyFiles.append($1); return true },
        "recovery-passphrase-file": { $0.vault.recoveryPassphraseFile = $1; return true },
        "server": { $0.server = $1; return true },
        "ctrl": { $0.ctrl = $1; return true },
        "flags": { $0.flags = $1; return true },
        "log-level": { $0.logLevel = $1; return true },
        "log-file": { $0.logFile = $1; return true },
        "migration-key": { $0.migrationKey = $1; return true },
        "migration": { $0.migration = $1; return true },
        "uefi-vars": { $0.uefiVars = $1; return true },
        "host-socket": { $0.hostSocket = $1; return true },
        "cluster-wait": { settings, text in Int(text).map { settings.clusterWait = $0 } != nil },
        "max-control-connections": { settings, text in Int(text).map { settings.maxControlConnections = $0 } != nil },
        "request-timeout": { settings, text in Int32(text).map { settings.requestTimeout = $0 } != nil },
        "write-timeout": { settings, text in Int32(text).map { settings.writeTimeout = $0 } != nil },
        "uefi-poll": { settings, text in Int(text).map { settings.uefiPoll = $0 } != nil },
        "policy-settle": { settings, text in Int(text).map { settings.policySettle = $0 } != nil },
    ]
}
