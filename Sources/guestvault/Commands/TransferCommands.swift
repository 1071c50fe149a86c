import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import GuestVaultTransfer
import GuestVaultVM
import Logging
import Synchronization

/// `--recipient HEX` or `--psk-file F`.
struct TransferKeyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A migration key both vaults hold: a file of at least 32 bytes (mode 0600). Authenticates both ends.", valueName: "file"))
    var pskFile: String?

    @Option(help: ArgumentHelp("Give up when the peer sends or takes nothing for this many seconds (above 0, at most 86400).", valueName: "seconds"))
    var timeout: Double = 60

    @Option(help: ArgumentHelp("How much to log on standard error: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(logLevel.prefix(40))'")
        }
    }

    /// The transfer's logger: one line a record on standard error, at `--log-level`.
    func logger() -> Logger {
        transferLogger(level: Logger.Level(rawValue: logLevel) ?? .info)
    }

    func presharedKey() throws -> SecretBytes? {
        guard let pskFile else { return nil }
        let key = try readSecretFile(pskFile, what: "migration key")
        guard key.count >= 32 else { throw ValidationError("the migration key in \(pskFile) is \(key.count) bytes; use at least 32 (e.g. head -c 32 /dev/urandom > \(pskFile))") }
        return key
    }
}

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a sealed container to another host's `guestvault receive`, encrypted and authenticated.",
        discussion: """
            The container moves as it is sealed, with its key inside the encrypted session so
            the receiving vault can wrap it for itself. Authenticate the destination with its
            recipient key (printed there by `guestvault vault recipient`); this vault's own
            recipient key proves to the receiver who sends (give it to the receiver's --from).
            Or authenticate both ends with a migration key file both hosts hold. An
            interrupted send resumes where the receiver last acknowledged when run again.

            Examples:
              guestvault send --vault DIR vm1.state --to tcp:10.0.0.2:7420 --recipient 3f5c…
              guestvault send --vault DIR vm1.state --to tcp:[::1]:7420 --psk-file /root/migration.key
            """)

    @OptionGroup var vault: VaultOptions
    @OptionGroup var keys: TransferKeyOptions

    @Argument(help: ArgumentHelp("The container to send.", valueName: "state"))
    var state: String

    @Option(help: ArgumentHelp("Where the receiver listens: tcp:HOST:PORT or unix:PATH.", valueName: "address"))
    var to: String

    @Option(help: ArgumentHelp("The destination vault's X25519 recipient public key (64 hex digits).", valueName: "hex"))
    var recipient: String?

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        let timeouts = try TransferTimeouts(idle: keys.timeout)
        guard let address = StreamSocket.Address(to) else { throw ValidationError("--to \(to) is not tcp:HOST:PORT or unix:PATH") }
        let keyVault = try vault.open()
        let authentication: TransferAuthentication
        if let psk = try keys.presharedKey() {
            guard recipient == nil else { throw ValidationError("give --recipient or --psk-file, not both") }
            authentication = .presharedKey(psk)
        } else if let recipient {
            authentication = .toRecipient(try parseRecipientKey(recipient, option: "--recipient"), sender: try keyVault.recipientKey())
        } else {
            throw ValidationError("say who may receive: --recipient KEY (from `guestvault vault recipient` on the destination) or --psk-file F")
        }
        let socket = try StreamSocket.connect(address)
        try socket.setTimeout(seconds: timeouts.idle)
        let bar = ProgressBar(label: "send")
        let report = try ContainerTransfer.send(containerAt: state, vault: keyVault, over: socket, authentication: authentication,
                                                logger: keys.logger(), progress: { bar.update($0) })
        bar.finish()
        if json { try printJSON(report) } else {
            let rate = report.seconds > 0 ? Double(report.bytes) / report.seconds / 1e6 : 0
            print("Sent \(state) (VM \(report.vm.uuidString.lowercased())): \(formatBytes(report.bytes)) in \(String(format: "%.2f", report.seconds)) s, \(String(format: "%.0f", rate)) MB/s\(report.resumedFrom > 0 ? ", resumed at \(formatBytes(report.resumedFrom))" : ""); the receiver committed generation \(report.generation)")
        }
    }
}

struct Receive: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive one container from `guestvault send` into this host's vault.",
        discussion: """
            Listens for one transfer, checks every frame, and only when the final frame has
            verified gives the container a slot for this vault, commits it and links it into
            place as STATE. Until then nothing appears at STATE; an interrupted transfer
            leaves STATE.partial-* for the sender's retry to resume. Connections that are not
            an accepted sender, or that do not finish the handshake within
            --handshake-timeout, are closed and the listener goes on waiting; while one
            transfer runs, other senders are told the receiver is busy.

            With recipient keys, say whose transfers to accept: --from with the sending
            vault's `guestvault vault recipient` key (repeatable). --from-any accepts any
            sender that proves some vault key: anyone who can reach the listener can place a
            container at STATE, for any VM unless --vm limits them. What it cannot do, with
            --from-any or --from: touch a container this vault already holds or its rollback
            counter. A container this vault has a counter for (it holds or held it) is
            refused; a new one gets a counter of its own. A migration key file (--psk-file)
            authenticates both ends instead.

            Examples:
              guestvault receive --vault DIR --listen tcp:0.0.0.0:7420 --from 9a41… --vm 6f1d2c3b-… vm1.state
              guestvault receive --vault DIR --listen tcp:127.0.0.1:7420 --psk-file /root/migration.key vm1.state
            """)

    @OptionGroup var vault: VaultOptions
    @OptionGroup var keys: TransferKeyOptions

    @Option(help: ArgumentHelp("Where to listen: tcp:HOST:PORT or unix:PATH.", valueName: "address"))
    var listen: String

    @Option(help: ArgumentHelp("A sending vault's recipient public key (64 hex digits) whose transfers to accept; repeat for more.", valueName: "hex"))
    var from: [String] = []

    @Flag(help: "Accept a transfer from any sender that proves a vault key (recipient-key mode; see above for what that trusts).")
    var fromAny = false

    @Option(help: ArgumentHelp("Accept only a container of this VM (UUID); repeat for more. Without it, any VM.", valueName: "uuid"))
    var vm: [String] = []

    @Option(help: ArgumentHelp("Close a connection that has not sent its hello and manifest within this many seconds (above 0, at most 86400).", valueName: "seconds"))
    var handshakeTimeout: Double = 10

    @Option(help: ArgumentHelp("Refuse a container larger than this many GiB.", valueName: "GiB"))
    var maxSize: UInt64 = ContainerTransfer.defaultMaximumBytes >> 30

    @Argument(help: ArgumentHelp("Where the received container goes (must not exist).", valueName: "state"))
    var state: String

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        guard let address = StreamSocket.Address(listen) else { throw ValidationError("--listen \(listen) is not tcp:HOST:PORT or unix:PATH") }
        let keyVault = try vault.open()
        let authentication: TransferAuthentication
        if let psk = try keys.presharedKey() {
            guard from.isEmpty, !fromAny else { throw ValidationError("--psk-file authenticates the sender already; drop --from/--from-any") }
            authentication = .presharedKey(psk)
        } else {
            let accepted: AcceptedSenders
            switch (from.isEmpty, fromAny) {
            case (false, false): accepted = .only(try from.map { try parseRecipientKey($0, option: "--from") })
            case (true, true): accepted = .anyone
            case (false, true): throw ValidationError("give --from KEY or --from-any, not both")
            case (true, false):
                throw ValidationError("say whose transfers to accept: --from KEY (the sending vault's `guestvault vault recipient`), --from-any, or --psk-file F")
            }
            authentication = .asRecipient(try keyVault.recipientKey(), accepting: accepted)
        }
        guard maxSize >= 1, maxSize <= (1 << 33) else { throw ValidationError("--max-size must be 1 to \(1 << 33) GiB") }
        // Checked here, not in validate(): a bad number is one line on stderr.
        let timeouts = try TransferTimeouts(idle: keys.timeout, handshake: handshakeTimeout)
        var vms: Set<UUID>?
        if !vm.isEmpty {
            vms = Set(try vm.map { text in
                guard let uuid = UUID(uuidString: text) else { throw ValidationError("--vm must be a VM UUID, not '\(text.prefix(60))'") }
                return uuid
            })
        }
        let policy = ReceivePolicy(maximumBytes: maxSize << 30, vms: vms)
        let logger = keys.logger()
        let listener = try StreamSocket.listen(address)
        defer { listener.close() }
        let bar = ProgressBar(label: "receive")
        let destination = state
        let report = try ReceiveListener.receiveOne(on: listener, timeouts: timeouts, logger: logger) { channel in
            try ContainerTransfer.receive(over: channel, into: destination, vault: keyVault, authentication: authentication,
                                          policy: policy, logger: logger, progress: { bar.update($0) })
        }
        bar.finish()
        if json { try printJSON(report) } else {
            let sender = report.sender.map { ", from vault key \($0.prefix(16))…" } ?? ""
            print("Received \(state) (VM \(report.vm.uuidString.lowercased()))\(sender), \(formatBytes(report.bytes)) in \(String(format: "%.2f", report.seconds)) s; committed generation \(report.generation)")
        }
    }
}

/// The transfer's logger until the CLI-wide handler exists: swift-log's plain stream
/// handler on standard error at `level`, labelled `guestvault.transfer`.
func transferLogger(level: Logger.Level) -> Logger {
    var logger = Logger(label: "guestvault.transfer") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = level
    return logger
}

/// An X25519 public key given as 64 hex digits.
func parseRecipientKey(_ text: String, option: String) throws -> X25519.PublicKey {
    guard let bytes = bytes(fromHex: text), bytes.count == 32 else {
        throw ValidationError("\(option) must be a recipient key of 64 hex digits (from `guestvault vault recipient`), not '\(text.prefix(80))'")
    }
    return try X25519.PublicKey(rawRepresentation: bytes)
}

/// A progress bar on standard error when it is a terminal; silent otherwise. Updated
/// from the thread that runs the transfer.
final class ProgressBar: Sendable {
    let label: String
    let enabled = isatty(2) == 1
    private let last = Mutex<Double>(0)

    init(label: String) { self.label = label }

    func update(_ progress: ContainerTransfer.Progress) {
        guard enabled, progress.total > 0 else { return }
        let now = progress.seconds
        let due = last.withLock { last -> Bool in
            guard now - last > 0.1 || progress.bytes == progress.total else { return false }
            last = now
            return true
        }
        guard due else { return }
        let fraction = Double(progress.bytes) / Double(progress.total)
        let filled = Int(fraction * 30)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
        let line = String(format: "\r%@ [%@] %5.1f%% %@ %.0f MB/s", label, bar, fraction * 100, formatBytes(progress.bytes), progress.bytesPerSecond / 1e6)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
