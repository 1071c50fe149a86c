import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultVM

struct RecoveryKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery-key",
        abstract: "Make and read offline recovery keys.",
        discussion: """
            A recovery key is an X25519 key pair kept away from the host (on paper, a USB
            stick, a safe). Containers made with `--recovery-recipient HEX` (the public half)
            have a recovery slot it opens; every verb that opens a container takes
            `--recovery-key FILE`, so a VM's state stays readable when its vault is lost.
            `guestvault rekey --recovery-key FILE --to-vault DIR STATE` then gives the
            container to a new vault, and `guestvault restore` does so for a whole backup.

            Examples:
              guestvault recovery-key new /safe/recovery.key
              guestvault recovery-key new --passphrase-file /root/recovery.pass /safe/recovery.key
              guestvault create --vault DIR --vm UUID --recovery-recipient $(guestvault recovery-key public /safe/recovery.key) vm1.state
            """,
        subcommands: [New.self, Public.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new recovery key file (mode 0600, never over an existing file) and print its public half.")

        @Option(help: ArgumentHelp("Protect the key with the passphrase in this file (mode 0600); scrypt N=2^17, r=8, p=1.", valueName: "file"))
        var passphraseFile: String?

        @Argument(help: ArgumentHelp("The recovery key file to make.", valueName: "file"))
        var file: String

        @Flag(help: "Print as JSON.")
        var json = false

        func run() throws {
            let passphrase = try passphraseFile.map { try readSecretFile($0, what: "passphrase") }
            let publicKey = try RecoveryKeyFile.create(at: file, passphrase: passphrase)
            let hex = hexString(publicKey.rawRepresentation)
            if json {
                struct Made: Encodable { let file: String; let publicKey: String; let passphraseProtected: Bool }
                try printJSON(Made(file: file, publicKey: hex, passphraseProtected: passphrase != nil))
            } else {
                print(hex)
                FileHandle.standardError.write(Data("wrote the recovery key to \(file)\(passphrase != nil ? " (passphrase-protected)" : ""); keep it offline. Its public half (above) goes to `create --recovery-recipient`.\n".utf8))
            }
        }
    }

    struct Public: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the public half of a recovery key file.")

        @Option(help: ArgumentHelp("A file holding the key's passphrase, if it has one (mode 0600).", valueName: "file"))
        var passphraseFile: String?

        @Argument(help: ArgumentHelp("The recovery key file.", valueName: "file"))
        var file: String

        func run() throws {
            let passphrase = try passphraseFile.map { try readSecretFile($0, what: "passphrase") }
            print(hexString(try RecoveryKeyFile.load(at: file, passphrase: passphrase).publicKey.rawRepresentation))
        }
    }
}
