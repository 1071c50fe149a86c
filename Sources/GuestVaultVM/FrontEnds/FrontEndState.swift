import ArgumentParser
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

/// Where a front end keeps a VM's TPM: the sealed container inside the state directory
/// libvirt names (`dir://` or a plain path), or the file Proxmox names (`file://`).
/// swtpm's plaintext files in a state directory are only ever read, to import them once.
struct FrontEndStateLocation {
    /// The container's file name in a state directory.
    static let containerName = "tpm2-00.guestvault"
    /// swtpm 0.7's files in a state directory (imported once, then removed).
    static let swtpmFiles = ["tpm2-00.permall", "tpm2-00.volatilestate", "tpm2-00.savestate"]

    /// The state directory (nil for a `file://` volume).
    let directory: String?
    /// The container file.
    let container: String

    /// Reads swtpm's `--tpmstate dir=PATH[,mode=M]` / `backend-uri=dir://PATH|file://PATH`,
    /// or swtpm_setup's `--tpmstate|--tpm-state PATH|dir://PATH|file://PATH`.
    init(uri text: String, program: String) throws {
        if text.hasPrefix("dir://") {
            try self.init(directory: String(text.dropFirst("dir://".count)), program: program)
        } else if text.hasPrefix("file://") {
            let path = String(text.dropFirst("file://".count))
            guard path.hasPrefix("/") else { throw FrontEndError.usage(program, "file:// needs an absolute path, not \(text)") }
            self.init(directory: nil, container: path)
        } else if text.contains("://") {
            throw FrontEndError(.frontEndUnsupported, "\(program): state backend \(text) is not supported (dir:// and file:// are)")
        } else {
            try self.init(directory: text, program: program)
        }
    }

    init(directory: String, program: String) throws {
        guard directory.hasPrefix("/") else { throw FrontEndError.usage(program, "the state directory must be an absolute path, not \(directory)") }
        self.init(directory: directory, container: FileSystem.join(directory, Self.containerName))
    }

    private init(directory: String?, container: String) {
        self.directory = directory
        self.container = container
    }

    /// Whether the container file holds a GuestVault container (a zero-filled or empty
    /// volume that Proxmox allocated counts as no state).
    var hasContainer: Bool {
        guard FileSystem.exists(container) else { return false }
        return !isBlankVolume
    }

    /// A `file://` volume that exists but was never written (all zeros, or empty).
    var isBlankVolume: Bool {
        // A plain open, as swtpm's: Proxmox's volume may be a block device behind a link.
        // Non-blocking, so that a FIFO put there cannot hang the front end (it reads as
        // empty; the container's own open refuses it later).
        guard directory == nil else { return false }
        let fd = Glibc.open(container, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return false }
        defer { _ = close(fd) }
        guard let head = try? Descriptors.readToEnd(fd, limit: 4095) else { return false }
        return head.allSatisfy { $0 == 0 }
    }

    /// swtpm's plaintext state in the directory (an operator switching a host over).
    var hasSwtpmState: Bool {
        guard let directory else { return false }
        return FileSystem.exists(FileSystem.join(directory, Self.swtpmFiles[0]))
    }

    /// The VM id in libvirt's layout, /var/lib/libvirt/swtpm/UUID/tpm2.
    var impliedVM: UUID? {
        guard let directory else { return nil }
        return UUID(uuidString: FileSystem.parentDirectory(of: directory).split(separator: "/").last.map(String.init) ?? "")
    }

    /// Creates the state directory (0700) when it is missing.
    func prepareDirectory() throws {
        guard let directory, !FileSystem.isDirectory(directory) else { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    /// Removes a blank volume so a container can be created in its place.
    func removeBlankVolume() throws {
        if isBlankVolume { try FileSystem.removeFile(container) }
    }

    /// Creates a new container for `vm` with `secret` (libvirt's VM secret) as an extra
    /// passphrase protector.
    func create(vm: UUID, vault: KeyVault, secret: SecretBytes?) throws -> GuestStateContainer {
        try prepareDirectory()
        try removeBlankVolume()
        let extra: [(SecretBytes) throws -> KeyProtector] = secret.map { secret in
            [{ dek in try KeyProtector.wrapForPassphrase(dek, passphrase: secret) }]
        } ?? []
        let created = try GuestStateContainer.create(at: container, vm: vm, vault: vault, extraSlots: extra)
        if let secret {
            try FrontEndSecret.record(secret, in: created)
            try created.commit()
        }
        return created
    }

    /// Opens the container for writing, unlocked with the vault.
    func open(vault: KeyVault) throws -> GuestStateContainer {
        let opened = try GuestStateContainer.open(at: container, access: .readWrite)
        try opened.unlock(with: UnlockCredentials(vault: vault))
        return opened
    }

    /// Imports swtpm's plaintext (or `key`-encrypted) state from the directory into a new
    /// container, then removes swtpm's files. Logs what it did.
    func importSwtpmState(vm: UUID, vault: KeyVault, secret: SecretBytes?, key: SwtpmKey?, logger: Logger) throws -> GuestStateContainer {
        guard let directory else { throw FrontEndError(.frontEndState, "no state directory to import from") }
        let created = try create(vm: vm, vault: vault, secret: secret)
        let report: SwtpmImportReport
        do {
            report = try SwtpmInterop.importState(from: directory, key: key, into: created) { permanent, volatile, savestate in
                try TPMStateCheck.validate(permanent: permanent, volatile: volatile, savestate: savestate)
            }
            try created.flush()
        } catch {
            try? FileSystem.removeFile(container)
            try? FileSystem.removeFile(container + ".lock")
            throw error
        }
        for name in Self.swtpmFiles {
            let path = FileSystem.join(directory, name)
            if FileSystem.exists(path) { try FileSystem.removeFile(path) }
        }
        try FileSystem.syncDirectory(directory)
        logger.notice("imported swtpm's state from \(directory) (\(report.files.map(\.file).joined(separator: ", "))) into the sealed container \(container), generation \(report.generation); removed swtpm's plaintext files")
        return created
    }

    /// What swtpm's `--print-states` prints: the permanent state, if there is one.
    func statesJSON() throws -> String {
        var states: [String] = []
        if hasContainer || hasSwtpmState { states.append(#"{"name": "tpm2-00.permall"}"#) }
        return #"{ "type": "swtpm", "states": [ "# + states.joined(separator: ", ") + " ] }"
    }
}

/// What every front end reads from its environment: the vault (GUESTVAULT_VAULT, or the
/// default), the log, libvirt's secret on a descriptor, the user to run as.
enum FrontEndEnvironment {
    /// Where the front ends find the host's vault when GUESTVAULT_VAULT is not set
    /// (libvirt runs them with a cleared environment).
    static let defaultVault = "/var/lib/guestvault/vault"

    static func vaultPath() -> String {
        if let path = Environment.value("GUESTVAULT_VAULT"), !path.isEmpty { return path }
        return defaultVault
    }

    static func openVault() throws -> KeyVault {
        try VaultOptions.parse(["--vault", vaultPath()]).open()
    }

    /// A logger writing one line per record to `path` (appended, created 0600, no
    /// symlinks), or to standard error.
    static func logger(program: String, file path: String?, level: Logger.Level = .info) throws -> Logger {
        let sink: LineLogHandler.Sink = try path.map { .file(try SafeOpen.appendLog($0)) } ?? .standardError
        let handler = LineLogHandler(label: "guestvault \(program)[\(getpid())]", sink: sink, level: level)
        return Logger(label: "guestvault.\(program)") { _ in handler }
    }

    /// Reads a secret libvirt writes into a pipe (all bytes up to end of file), and
    /// closes the descriptor.
    static func readSecret(fd text: String, option: String, program: String) throws -> SecretBytes {
        guard let fd = Int32(text), fd > 2 else { throw FrontEndError.usage(program, "\(option) needs a descriptor number above 2, not \(text)") }
        var bytes: [UInt8] = []
        defer {
            for index in bytes.indices { bytes[index] = 0 }
            _ = close(fd)
        }
        do { bytes = try Descriptors.readToEnd(fd, limit: 1 << 16) } catch let error as SystemError {
            throw FrontEndError.usage(program, "\(option): descriptor \(fd) cannot be read (errno \(error.errno))")
        }
        guard bytes.count <= 1 << 16 else { throw FrontEndError.usage(program, "\(option): the secret on descriptor \(fd) is over 64 KiB") }
        guard !bytes.isEmpty else { throw FrontEndError.usage(program, "\(option): descriptor \(fd) gave an empty secret") }
        return SecretBytes(copying: bytes)
    }

    /// Reads a secret file (swtpm_setup's --pwdfile).
    static func readSecret(file path: String, program: String) throws -> SecretBytes {
        try SecretFile.read(path, what: "passphrase", hint: "write the passphrase to it", singleLine: false)
    }

    /// swtpm's `--runas USER|UID`: when root, switch to that user (a no-op for the
    /// current user).
    static func runAs(_ user: String, program: String) throws {
        let uid: uid_t
        let gid: gid_t
        if let number = UInt32(user) {
            uid = number
            gid = getpwuid(number).map { $0.pointee.pw_gid } ?? number
        } else {
            guard let entry = getpwnam(user) else { throw FrontEndError.usage(program, "--runas \(user): no such user") }
            uid = entry.pointee.pw_uid
            gid = entry.pointee.pw_gid
        }
        guard uid != getuid() || gid != getgid() else { return }
        guard getuid() == 0 else { throw FrontEndError(.frontEndUsage, "\(program): --runas \(user) needs root") }
        guard setgroups(0, nil) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw FrontEndError(.frontEndUsage, "\(program): could not switch to user \(user) (errno \(errno))")
        }
    }
}
