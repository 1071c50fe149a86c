public import FoundationEssentials
import Glibc
import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultSystem

extension GuestStateContainer {
    /// Opens an existing container. `.readWrite` takes the writer lock. The container
    /// and its lock file are opened without following symlinks, and must be regular
    /// files (the lock file also owned by this user or root, not group/other-writable).
    public static func open(at path: String, access: Access = .readOnly) throws -> GuestStateContainer {
        try open(at: path, access: access, lockScope: .whole)
    }

    static func open(at path: String, access: Access, lockScope: ContainerLock.Scope) throws -> GuestStateContainer {
        let lock = access == .readWrite ? try ContainerLock(containerPath: path, scope: lockScope) : nil
        if lock != nil { removeUnfinishedRewrites(of: path) }
        let storage: FileStorage
        do {
            storage = try FileStorage(existing: path, mode: access == .readWrite ? .readWrite : .readOnly)
        } catch let error as SystemError where error.isNotFound {
            throw ContainerError(.noSuchEntry, subject: path, reason: "no such container file", underlying: error)
        } catch {
            throw ContainerError.io(error, subject: path, "cannot open the container")
        }
        return try open(storage: storage, path: path, access: access, lock: lock)
    }

    /// Opens a container over any storage (a file, or memory in tests).
    static func open(storage: any ContainerStorage, path: String, access: Access, lock: ContainerLock? = nil) throws -> GuestStateContainer {
        let scan = try LogScan.scan(storage)
        let container = GuestStateContainer(path: path, access: access, storage: storage, lock: lock, scan: scan)
        if access == .readWrite && scan.hasTail {
            try container.clearTail()
        }
        return container
    }

    /// Opens a container held in memory, read-only: the same parsing as a file, no I/O.
    /// For the fuzzers and tests.
    @_spi(Testing)
    public static func open(bytes: [UInt8], name: String = "memory") throws -> GuestStateContainer {
        try open(storage: MemoryStorage(bytes, name: name), path: name, access: .readOnly)
    }

    /// Removes the staged files (`STATE.tmp-PID-N`, and `STATE.compact-PID` of earlier
    /// versions) that a writer killed during compaction or DEK rotation left behind (the
    /// rename never happened, so the container is whole without them). Only the holder
    /// of the writer lock rewrites, and the caller holds it now; a staged file of a
    /// process that still runs (a `create` in progress) is left alone.
    static func removeUnfinishedRewrites(of path: String) {
        let directory = FileSystem.parentDirectory(of: path)
        let base = FileSystem.lastComponent(of: path)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            let pid: Substring
            if name.hasPrefix(base + ".compact-") {
                pid = name.dropFirst(base.count + ".compact-".count)
            } else if name.hasPrefix(base + ".tmp-") {
                let rest = name.dropFirst(base.count + ".tmp-".count)
                let parts = rest.split(separator: "-", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[1].isEmpty, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }) else { continue }
                pid = parts[0]
            } else {
                continue
            }
            guard !pid.isEmpty, pid.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int32(pid) else { continue }
            if number != ProcessInfo.processInfo.processIdentifier && FileManager.default.fileExists(atPath: "/proc/\(number)") { continue }
            try? FileSystem.removeFile(FileSystem.join(directory, name))
        }
    }

    /// Creates a new container for `vm` at `path` (which must not exist), with a random
    /// DEK wrapped in a vault slot (KEK epoch `epoch`) and any `extraSlots` makers, and
    /// opens it unlocked for writing at generation 1. The file appears complete or not
    /// at all (staged beside the path, published by link: nothing there is replaced).
    public static func create(
        at path: String, vm: UUID, vault: KeyVault, epoch: UInt32 = 1,
        extraSlots: [(SecretBytes) throws -> KeyProtector] = []
    ) throws -> GuestStateContainer {
        if FileSystem.exists(path) {
            throw ContainerError(.alreadyExists, subject: path, reason: "a file already exists here; nothing was changed")
        }
        let (bytes, keys) = try initialBytes(vm: vm, vault: vault, epoch: epoch, extraSlots: extraSlots, subject: path)
        do {
            let staged = try StagedFile(beside: path)
            try staged.write(bytes, at: 0)
            try staged.publish(.creatingNew)
        } catch let error as SystemError where error.errno == EEXIST {
            throw ContainerError(.alreadyExists, subject: path, reason: "a file appeared here meanwhile; nothing was changed", underlying: error)
        } catch {
            throw ContainerError.io(error, subject: path, "could not create the container")
        }
        let container = try open(at: path, access: .readWrite)
        try container.adoptNewKeys(keys, vault: vault)
        return container
    }

    /// Creates a container in `storage` (memory, for tests), unlocked for writing.
    static func create(in storage: MemoryStorage, vm: UUID, vault: KeyVault) throws -> GuestStateContainer {
        let (bytes, keys) = try initialBytes(vm: vm, vault: vault, epoch: 1, extraSlots: [], subject: storage.name)
        storage.replaceContents(with: bytes)
        let container = try open(storage: storage, path: storage.name, access: .readWrite)
        try container.adoptNewKeys(keys, vault: vault)
        return container
    }

    /// The bytes of a new container at generation 1 (superblock, first commit, the
    /// preallocated zeros) and its keys.
    private static func initialBytes(
        vm: UUID, vault: KeyVault, epoch: UInt32, extraSlots: [(SecretBytes) throws -> KeyProtector], subject: String
    ) throws -> ([UInt8], EntryKeys) {
        guard vm != UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)) else {
            throw ContainerError(.invalidName, subject: subject, reason: "the nil UUID is not a VM id; give the VM's own UUID")
        }
        let dek = try SecretBytes(randomCount: 32)
        var slots = try KeyProtectorSet([.wrapForVault(dek, vault: vault, vm: vm, epoch: epoch)])
        for make in extraSlots { try slots.add(make(dek)) }
        let superblock = Superblock(containerID: try SecureRandom.bytes(count: 16), vm: vm,
                                    created: UInt64(Date().timeIntervalSince1970))
        let keys = try EntryKeys(dek: dek, containerID: superblock.containerID)
        let header = try superblock.encoded()
        var bytes = header + [UInt8](repeating: 0, count: Int(ContainerFormat.logStart) - header.count)
        bytes += try CommitRecord(generation: 1, previous: 0, slots: slots, entries: [], keys: keys, superblockBytes: header).bytes
        bytes += [UInt8](repeating: 0, count: Int(preallocationStep))
        return (bytes, keys)
    }

    private func adoptNewKeys(_ keys: EntryKeys, vault: KeyVault) throws {
        self.keys = keys
        self.vault = vault
        unlockedSlot = 0
        try vault.counters.record(vm: vm, container: containerID, generation: 1)
    }

    // MARK: Keys

    /// Opens the DEK with the first slot the credentials open, checks the metadata's
    /// authenticator, and (with a vault) refuses a generation older than the vault has
    /// seen for this VM unless `allowRollback`. Returns the slot that opened.
    @discardableResult
    public func unlock(with credentials: UnlockCredentials, allowRollback: Bool = false) throws -> Int {
        do {
            return try unlockScanned(with: credentials, allowRollback: allowRollback)
        } catch let error as ContainerError where error.code == .rollback && access == .readOnly {
            // A reader that scanned the log just before a writer (serve) committed sees
            // the writer's newer counter: scan once more and check the newer metadata.
            let fresh = try LogScan.scan(storage)
            guard fresh.manifest.generation > scan.manifest.generation,
                  fresh.superblock.containerID == scan.superblock.containerID else { throw error }
            scan = fresh
            return try unlockScanned(with: credentials, allowRollback: allowRollback)
        }
    }

    private func unlockScanned(with credentials: UnlockCredentials, allowRollback: Bool) throws -> Int {
        let (dek, slot) = try scan.manifest.slots.unwrap(vm: scan.superblock.vm, with: credentials)
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        let expected = try CommitRecord.authenticator(manifest: scan.manifest, keys: keys, superblockBytes: scan.superblockBytes,
                                                      headerPrefix: scan.commitHeaderPrefix)
        guard constantTimeEquals(expected, scan.manifest.auth) else {
            throw ContainerError(.authenticationFailed, subject: path,
                                 reason: "the metadata of generation \(scan.manifest.generation) does not authenticate: the file was changed")
        }
        if let vault = credentials.vault {
            switch try vault.counters.check(vm: scan.superblock.vm, container: scan.superblock.containerID, generation: scan.manifest.generation) {
            case .rollback(let latest) where !allowRollback:
                throw ContainerError(.rollback, subject: path,
                                     reason: "generation \(scan.manifest.generation) is older than generation \(latest), which vault \(vault.path) has seen for VM \(scan.superblock.vm.uuidString.lowercased()): an older copy was put back")
            case .rollback:
                break
            case .unknown, .current:
                try vault.counters.record(vm: scan.superblock.vm, container: scan.superblock.containerID, generation: scan.manifest.generation)
            }
            self.vault = vault
        }
        self.keys = keys
        unlockedSlot = slot
        return slot
    }

    /// Unlocks with the DEK itself (handed over by an authenticated transfer), checking
    /// the metadata's authenticator. Returns nothing to say which slot: none was used.
    public func unlock(withKey dek: SecretBytes, vault: KeyVault?, allowRollback: Bool = false) throws {
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        let expected = try CommitRecord.authenticator(manifest: scan.manifest, keys: keys, superblockBytes: scan.superblockBytes,
                                                      headerPrefix: scan.commitHeaderPrefix)
        guard constantTimeEquals(expected, scan.manifest.auth) else {
            throw ContainerError(.authenticationFailed, subject: path, reason: "the key does not authenticate this container's metadata")
        }
        if let vault {
            if case .rollback(let latest) = try vault.counters.check(vm: vm, container: containerID, generation: generation), !allowRollback {
                throw ContainerError(.rollback, subject: path, reason: "generation \(generation) is older than generation \(latest), which vault \(vault.path) has seen for this VM")
            }
            try vault.counters.record(vm: vm, container: containerID, generation: generation)
            self.vault = vault
        }
        self.keys = keys
    }

    /// The container's DEK, for handing over inside an authenticated, encrypted
    /// transfer. Needs the container unlocked.
    public func protectionKey() throws -> SecretBytes { try unlockedKeys().dek }
}
