import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultVM

struct VaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "Create and inspect key vaults.",
        discussion: """
            A key vault holds the root key that every per-VM key is derived from. The file
            vault is a directory (0700) with the root key in root.key (0600), optionally
            protected by a passphrase. A PKCS#11 vault keeps the root key inside an HSM
            token as a non-extractable object; the directory then only names the token.

            Examples:
              guestvault vault init --vault /var/lib/guestvault/vault
              guestvault vault init --vault DIR --passphrase-file /root/vault.pass
              guestvault vault init --vault DIR --pkcs11 /usr/lib/softhsm/libsofthsm2.so \\
                  --token guestvault --pin-file /root/token.pin
              guestvault vault status --vault DIR --json
              guestvault vault recipient --vault DIR
            """,
        subcommands: [Init.self, Status.self, Recipient.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key vault (file vault by default, or PKCS#11 with --pkcs11).")

        @OptionGroup var vault: VaultOptions

        @Option(help: ArgumentHelp("Keep the root key in the PKCS#11 token of this module instead of a file.", valueName: "module.so"))
        var pkcs11: String?

        @Option(help: ArgumentHelp("The token's label (with --pkcs11).", valueName: "label"))
        var token: String?

        @Option(help: ArgumentHelp("A file holding the token's user PIN, mode 0600 (with --pkcs11).", valueName: "file"))
        var pinFile: String?

        @Option(help: ArgumentHelp("The root key object's label in the token (with --pkcs11).", valueName: "label"))
        var keyLabel: String = "guestvault-root"

        @Option(help: ArgumentHelp("scrypt cost for a passphrase vault, as log2 N with r = 8 (10 to 20; default 17: 128 MiB; 20: 1 GiB).", valueName: "n"))
        var scryptLog2N = ScryptLog2N(checked: 17)

        @Flag(help: "Print the new vault's status as JSON.")
        var json = false

        func validate() throws {
            if pkcs11 != nil {
                guard token != nil, pinFile != nil else { throw ValidationError("--pkcs11 needs --token and --pin-file") }
                guard vault.passphraseFile == nil else { throw ValidationError("--passphrase-file is for file vaults; a PKCS#11 vault uses --pin-file") }
            } else if token != nil || pinFile != nil {
                throw ValidationError("--token and --pin-file go with --pkcs11")
            }
        }

        func run() throws {
            let path = try vault.resolvedPath()
            let created: KeyVault
            if let module = pkcs11, let token, let pinFile {
                created = try KeyVault.createPKCS11Vault(at: path, module: module, token: token, pinFile: pinFile, keyLabel: keyLabel)
            } else {
                created = try KeyVault.createFileVault(
                    at: path, passphrase: vault.passphrase(),
                    scrypt: .init(n: 1 << UInt64(scryptLog2N.value), r: 8, p: 1))
            }
            let status = try created.status()
            if json {
                try printJSON(status)
            } else {
                print("Created \(status.backend) vault \(path)")
                print("  root key id  \(status.rootKeyID)")
                print("  root key     \(status.location)\(status.passphraseProtected ? " (passphrase-protected)" : "")")
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a vault's backend, root key id, recipient key and tracked VMs (opens the root key to check it).")

        @OptionGroup var vault: VaultOptions

        @Flag(help: "Print as JSON.")
        var json = false

        func run() throws {
            let status = try vault.open().status()
            if json {
                try printJSON(status)
                return
            }
            print("vault        \(status.path)")
            print("backend      \(status.backend)")
            print("root key id  \(status.rootKeyID)")
            print("root key     \(status.location)\(status.passphraseProtected ? " (passphrase-protected)" : "")")
            print("created      \(status.created)")
            print("recipient    \(status.recipientPublicKey ?? "none yet (made by `guestvault vault recipient`)")")
            print("tracked VMs  \(status.trackedVMs)")
        }
    }

    struct Recipient: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the vault's X25519 recipient public key (hex), creating it on first use.",
            discussion: """
                The vault's transfer identity. Give it to a sending host's `guestvault send \\
                --recipient` so state can be sent to this vault, and to a receiving host's \\
                `guestvault receive --from` so that host accepts state this vault sends. Or add it
                to a container as a recovery slot.
                """)

        @OptionGroup var vault: VaultOptions

        @Flag(help: "Print as JSON.")
        var json = false

        func run() throws {
            let key = try vault.open().recipientKey()
            let hex = hexString(key.publicKey.rawRepresentation)
            if json {
                try printJSON(["recipient": hex])
            } else {
                print(hex)
            }
        }
    }
}
