public import Foundation
import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem

/// Backups of containers, also while their VM runs, and restores on any host that has
/// a vault and a key that opens them (docs/BACKUP.md).
///
/// A backup takes no lock: a container's bytes up to the end of its last commit never
/// change while the file stays (appends go after them, rewrites go to a new file that
/// is renamed over it, and the copy reads the file it opened). So the copy is those
/// bytes, found by a read-only scan, and is then opened and verified at that generation.
public enum ContainerBackup {
    /// How many times a scan that met a concurrent append mid-write is retried.
    static let scanAttempts = 5
    static let pieceSize = 4 << 20

    // MARK: Backup

    /// Copies each container in `paths` into `directory` (made 0700 if missing; it must
    /// not hold a backup already), verifies every copy with `credentials`, and writes the
    /// manifest last. On failure the copies made so far are removed.
    public static func backup(_ paths: [String], to directory: String, credentials: UnlockCredentials,
                              progress: ((BackupManifest.Item) -> Void)? = nil) throws -> BackupManifest {
        guard !paths.isEmpty else { throw BackupError(.invalidArgument, subject: directory, reason: "no container to back up") }
        try prepareDirectory(directory)
        let manifestPath = FileSystem.join(directory, BackupManifest.fileName)
        guard !FileSystem.exists(manifestPath) else {
            throw BackupError(.alreadyExists, subject: directory, reason: "it already holds a backup; give an empty or new directory")
        }
        var items: [BackupManifest.Item] = []
        var made: [String] = []
        do {
            for path in paths {
                let item = try copy(path, into: directory, credentials: credentials)
                made.append(FileSystem.join(directory, item.file))
                guard !items.contains(where: { $0.restoredName == item.restoredName }) else {
                    throw BackupError(.invalidArgument, subject: path,
                                      reason: "another container of this backup has the file name \(item.restoredName); a restore could not place both")
                }
                items.append(item)
                progress?(item)
            }
            let manifest = BackupManifest(created: UInt64(Date().timeIntervalSince1970), items: items)
            try DurableFile.write(manifest.encoded(), to: manifestPath, mode: FileSystem.privateFileMode, .creatingNew)
            return manifest
        } catch {
            for file in made { try? FileSystem.removeFile(file) }
            throw error
        }
    }

    /// Copies one container as of its last commit into `directory` as
    /// `<vm>.<container id>.state` and verifies the copy: it opens at the same
    /// generation, its metadata authenticates under `credentials`, and every entry opens.
    public static func copy(_ path: String, into directory: String, credentials: UnlockCredentials) throws -> BackupManifest.Item {
        let started = DispatchTime.now().uptimeNanoseconds
        let source = try openConsistent(path)
        let id = source.containerIDValue.description
        let file = "\(source.vm.uuidString.lowercased()).\(id).state"
        let target = FileSystem.join(directory, file)
        let end = source.logEnd
        var hash = try SHA256()
        do {
            let staged = try StagedFile(beside: target, mode: FileSystem.privateFileMode)
            var buffer = [UInt8](repeating: 0, count: pieceSize)
            var offset: Int64 = 0
            while offset < end {
                let count = Int(min(Int64(pieceSize), end - offset))
                let got = try source.readRaw(into: &buffer, bufferOffset: 0, at: offset, count: count)
                guard got == count else {
                    throw BackupError(.truncated, subject: path, reason: "the container ended at byte \(offset + Int64(got)) while its last commit ends at \(end)")
                }
                try staged.write(Array(buffer[0..<count]), at: offset)
                try hash.update(buffer, range: 0..<count)
                offset += Int64(count)
            }
            try staged.publish(.creatingNew)
        } catch let error as SystemError where error.code == .fileExists {
            throw BackupError(.alreadyExists, subject: target, reason: "a file of this name is already in the backup directory", underlying: error)
        } catch let error as any GuestVaultError {
            throw BackupError(error.code, subject: path, reason: "could not copy the container into \(directory)", underlying: error)
        }
        do {
            let copy = try GuestStateContainer.open(at: target)
            guard copy.generation == source.generation, copy.containerID == source.containerID, copy.vm == source.vm else {
                throw BackupError(.backupMismatch, subject: target, reason: "the copy opens at generation \(copy.generation), not \(source.generation)")
            }
            // The live container may have committed since; its copy is older on purpose.
            try copy.unlock(with: credentials, allowRollback: true)
            for name in copy.entryNames { try copy.readStream(name) { _ in } }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            return BackupManifest.Item(file: file, source: path, vm: source.vm, containerID: id, generation: source.generation,
                                       committed: source.info.committed, bytes: end, sha256: hexString(try hash.finalize()),
                                       entries: copy.entryNames, seconds: seconds)
        } catch {
            try? FileSystem.removeFile(target)
            throw error
        }
    }

    /// Opens a container read-only. A scan that meets an append being written at that
    /// instant (the bytes after the log are neither zero nor a whole record header yet)
    /// is tried again; a damaged file fails the same way every time.
    static func openConsistent(_ path: String) throws -> GuestStateContainer {
        var attempt = 1
        while true {
            do {
                return try GuestStateContainer.open(at: path)
            } catch let error as ContainerError where error.code == .malformed && attempt < scanAttempts {
                attempt += 1
                usleep(1000)
            }
        }
    }

    // MARK: Restore

    /// What a restore did with one container.
    public struct Restored: Sendable, Codable {
        public let path: String
        public let vm: UUID
        public let containerID: String
        /// The generation in the backup.
        public let backupGeneration: UInt64
        /// The generation now (higher if the key was re-wrapped for the vault, or the
        /// container was moved past what the vault had seen).
        public let generation: UInt64
        /// The generation the vault had seen of this container before, if any.
        public let vaultHadSeen: UInt64?
        /// The kind of slot that opened the copy ("vault", "recipient", "passphrase").
        public let openedWith: String
        /// Whether a vault slot for the vault was made.
        public let rewrapped: Bool
    }

    /// Restores every container of the backup in `directory` into `target` (each under
    /// its original file name, which must not exist there) for `vault`, opening each copy
    /// with the vault or `recipientKeys` (recovery keys). Every copy is checked first
    /// (SHA-256 as the manifest says, opens, authenticates, not older than what `vault`
    /// has seen of it unless `allowRollback`); only then is anything placed. Each placed
    /// container gets a slot of `vault` if it had none, and its rollback counter in
    /// `vault` is set; an older copy taken with `allowRollback` is moved past what the
    /// vault has seen, so its counter moves forward.
    public static func restore(from directory: String, to target: String, vault: KeyVault, recipientKeys: [X25519.PrivateKey],
                               allowRollback: Bool) throws -> [Restored] {
        let manifestPath = FileSystem.join(directory, BackupManifest.fileName)
        let manifestBytes: [UInt8]
        do {
            manifestBytes = try FileSystem.readFile(manifestPath, limit: BackupManifest.maximumByteCount)
        } catch {
            throw BackupError((error as? any GuestVaultError)?.code ?? .io, subject: directory,
                              reason: "no readable backup manifest (\(BackupManifest.fileName)) here", underlying: error)
        }
        let manifest = try BackupManifest.parse(manifestBytes, subject: manifestPath)
        guard FileSystem.exists(target) else {
            throw BackupError(.backupNotFound, subject: target, reason: "no such directory; make it first (mode 0700)")
        }
        try checkDirectory(target)
        let credentials = UnlockCredentials(vault: vault, recipientKeys: recipientKeys)

        // 1. Check every copy; place nothing yet.
        var seen: [UInt64?] = []
        for item in manifest.items {
            let copyPath = FileSystem.join(directory, item.file)
            let destination = FileSystem.join(target, item.restoredName)
            guard !FileSystem.exists(destination) else {
                throw BackupError(.alreadyExists, subject: destination, reason: "a file is already there; move it away or restore elsewhere (nothing was restored)")
            }
            let digest = try sha256(of: copyPath)
            guard digest == item.sha256 else {
                throw BackupError(.backupMismatch, subject: copyPath, reason: "its SHA-256 is not the one in the manifest: the copy was damaged or replaced (nothing was restored)")
            }
            let copy = try GuestStateContainer.open(at: copyPath)
            guard copy.vm == item.vm, copy.containerIDValue.description == item.containerID, copy.generation == item.generation else {
                throw BackupError(.backupMismatch, subject: copyPath, reason: "the container is not the one the manifest describes (nothing was restored)")
            }
            let latest = try vault.counters.latest(vm: copy.vm, container: copy.containerID)
            do {
                try copy.unlock(with: credentials, allowRollback: allowRollback)
            } catch {
                throw BackupError((error as? any GuestVaultError)?.code ?? .backupFailed, subject: copyPath,
                                  reason: "the backup of VM \(item.vm.uuidString.lowercased()) cannot be restored (nothing was restored)",
                                  underlying: error)
            }
            seen.append(latest)
        }

        // 2. Place each and make it the vault's.
        var results: [Restored] = []
        for (item, latest) in zip(manifest.items, seen) {
            let copyPath = FileSystem.join(directory, item.file)
            let destination = FileSystem.join(target, item.restoredName)
            do {
                let staged = try StagedFile(beside: destination, mode: FileSystem.privateFileMode)
                let file = try SafeOpen.existing(copyPath, mode: .readOnly)
                var buffer = [UInt8](repeating: 0, count: pieceSize)
                var offset: Int64 = 0
                while true {
                    let count = try file.read(into: &buffer, at: offset, count: buffer.count)
                    if count == 0 { break }
                    try staged.write(Array(buffer[0..<count]), at: offset)
                    offset += Int64(count)
                }
                try staged.publish(.creatingNew)
            } catch {
                throw BackupError(.io, subject: destination, reason: "could not place the restored container", underlying: error)
            }
            let container = try GuestStateContainer.open(at: destination, access: .readWrite)
            let slot = try container.unlock(with: credentials, allowRollback: allowRollback)
            let openedWith = container.slots.slots[slot].kind.description
            let hasVaultSlot = container.slots.slots.contains { slot in
                if case .vault(let id, _, _) = slot { return id == vault.rootKeyID }
                return false
            }
            var rewrapped = false
            if !hasVaultSlot {
                try container.adoptVault(vault, allowRollback: allowRollback)
                rewrapped = true
            } else if let latest, latest > container.generation {
                try container.advanceGeneration(past: latest)
            }
            try container.flush()
            results.append(Restored(path: destination, vm: item.vm, containerID: item.containerID, backupGeneration: item.generation,
                                    generation: container.generation, vaultHadSeen: latest, openedWith: openedWith, rewrapped: rewrapped))
        }
        return results
    }

    // MARK: Files

    static func sha256(of path: String) throws -> String {
        let file = try SafeOpen.existing(path, mode: .readOnly)
        var hash = try SHA256()
        var buffer = [UInt8](repeating: 0, count: pieceSize)
        var offset: Int64 = 0
        while true {
            let count = try file.read(into: &buffer, at: offset, count: buffer.count)
            if count == 0 { break }
            try hash.update(buffer, range: 0..<count)
            offset += Int64(count)
        }
        return hexString(try hash.finalize())
    }

    /// Makes `directory` (0700) if missing; an existing one must be a real directory
    /// (not a symlink) owned by this user or root that no one else can write.
    static func prepareDirectory(_ directory: String) throws {
        if !FileSystem.exists(directory) {
            do { try FileSystem.createDirectory(directory) } catch {
                throw BackupError(.io, subject: directory, reason: "could not make the backup directory", underlying: error)
            }
        }
        try checkDirectory(directory)
    }

    /// An existing directory must be a real directory (not a symlink) owned by this user
    /// or root that no one else can write: another user could otherwise swap or plant
    /// files in it.
    static func checkDirectory(_ directory: String) throws {
        let attributes = try? FileManager.default.attributesOfItem(atPath: directory)
        guard let type = attributes?[.type] as? FileAttributeType, type == .typeDirectory else {
            throw BackupError(.backupInsecure, subject: directory, reason: "not a directory (a symlink or a file is never written through)")
        }
        let owner = (attributes?[.ownerAccountID] as? NSNumber)?.uint32Value ?? UInt32.max
        let mode = (attributes?[.posixPermissions] as? NSNumber)?.uint32Value ?? 0o777
        guard owner == 0 || owner == FileSystem.currentUser, mode & 0o022 == 0 else {
            throw BackupError(.backupInsecure, subject: directory,
                              reason: "owned by uid \(owner) with mode \(String(mode, radix: 8)): another user could change what is in it; use a directory only you can write")
        }
    }
}
