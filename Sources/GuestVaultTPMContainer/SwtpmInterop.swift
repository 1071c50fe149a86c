import FoundationEssentials
import Glibc
public import GuestVaultCore
import GuestVaultCrypto
public import GuestVaultState
import GuestVaultSystem
public import GuestVaultTPM

/// A refusal of an swtpm import or export that is not about a file's bytes (those are
/// ``SwtpmFormatError``s): the directory, a lock, the container's entries.
public struct SwtpmInteropError: GuestVaultError {
    /// The codes are ``ErrorCode`` statics: `.notAStateDirectory`, `.inUse`, `.notEmpty`,
    /// `.missingEntry`, `.validationFailed`, `.io`.
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// The directory, file or container concerned.
    public let subject: String
    public let reason: String
    /// What caused it (a file-system error, libtpms' refusal).
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, subject: String, _ reason: String, underlying: (any Error & Sendable)? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.subject = subject
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    public var message: String { "\(subject): \(reason)" }
}

/// One state file of an import or export and the container entry it maps to.
public struct SwtpmFileReport: Sendable, Codable, Equatable {
    /// The file name in the state directory, e.g. "tpm2-00.permall".
    public let file: String
    /// The container entry, e.g. "tpm.permanent".
    public let entry: String
    /// The file's size.
    public let fileBytes: Int
    /// The libtpms blob's size (the entry's size).
    public let stateBytes: Int
    /// "v2" or "headerless".
    public let layout: String
    /// "aes-128-cbc", "aes-256-cbc", or nil for a plain file.
    public let encryption: String?
}

public struct SwtpmImportReport: Sendable, Codable, Equatable {
    public let directory: String
    public let container: String
    public let vm: String
    /// The container's generation after the import's commit.
    public let generation: UInt64
    /// How the files were encrypted (never the key).
    public let key: String?
    public let files: [SwtpmFileReport]
    /// Entries the container had that the directory has no file for, now removed.
    public let removedEntries: [String]
}

public struct SwtpmExportReport: Sendable, Codable, Equatable {
    public let directory: String
    public let container: String
    /// The container generation exported.
    public let generation: UInt64
    public let key: String?
    public let files: [SwtpmFileReport]
    /// Whether the directory was created (else it existed, empty or overwritten).
    public let createdDirectory: Bool
    /// Old state files removed because the container has no entry for them.
    public let removedFiles: [String]
}

/// Moving a TPM between an swtpm state directory and a sealed guest state container.
///
/// The files of the directory map to entries as follows (the entries hold the libtpms
/// blobs, the files the same blobs in swtpm's envelope; see docs/SWTPM.md):
///
/// | file                    | entry           | needed |
/// |-------------------------|-----------------|--------|
/// | `tpm2-00.permall`       | `tpm.permanent` | yes    |
/// | `tpm2-00.volatilestate` | `tpm.volatile`  | no     |
/// | `tpm2-00.savestate`     | `tpm.savestate` | no     |
public enum SwtpmInterop {
    /// The state files, in the order they are written on export (the permanent state
    /// last, so a directory never has a new permanent state beside an old volatile one
    /// from this export).
    public static let files: [(file: String, blob: TPMStateBlob)] = [
        ("tpm2-00.savestate", .saveState),
        ("tpm2-00.volatilestate", .volatile),
        ("tpm2-00.permall", .permanent),
    ]
    /// swtpm's lock file in a state directory (it holds an fcntl write lock while it runs).
    public static let lockFile = ".lock"

    /// Reads an swtpm state directory, checks and decrypts its files, hands the libtpms
    /// blobs to `validate(permanent, volatile, savestate)` (a libtpms check:
    /// `TPMStateCheck.validate`), and writes them to `container`'s TPM entries in one
    /// commit. The container must be unlocked for writing. Nothing is written unless
    /// every file reads and the check passes.
    public static func importState(
        from directory: String, key: SwtpmKey?, into container: GuestStateContainer,
        validate: ([UInt8], [UInt8]?, [UInt8]?) throws -> Void
    ) throws -> SwtpmImportReport {
        guard FileSystem.isDirectory(directory) else {
            throw SwtpmInteropError(.notAStateDirectory, subject: directory, "no such directory")
        }
        let permall = FileSystem.join(directory, "tpm2-00.permall")
        guard FileSystem.exists(permall) else {
            if FileSystem.exists(FileSystem.join(directory, "tpm-00.permall")) {
                throw SwtpmInteropError(.notAStateDirectory, subject: directory,
                                        "this is a TPM 1.2 state (tpm-00.permall); GuestVault keeps TPM 2.0 state only")
            }
            throw SwtpmInteropError(.notAStateDirectory, subject: directory,
                                    "no tpm2-00.permall here: not an swtpm TPM 2.0 state directory (swtpm_setup --tpm2 --tpm-state DIR makes one)")
        }
        try checkNotRunning(directory)

        var blobs: [TPMStateBlob: [UInt8]] = [:]
        var reports: [SwtpmFileReport] = []
        for (name, blob) in files.reversed() {
            let path = FileSystem.join(directory, name)
            guard FileSystem.exists(path) else { continue }
            let bytes = try readStateFile(path)
            let contents = try SwtpmStateFile.decode(bytes, file: path, key: key)
            if blob == .permanent && contents.payload.isEmpty {
                throw SwtpmFormatError(.truncated, file: path, offset: nil, "the permanent state is empty")
            }
            blobs[blob] = contents.payload
            reports.append(SwtpmFileReport(file: name, entry: blob.entryName, fileBytes: bytes.count,
                                           stateBytes: contents.payload.count, layout: contents.layout.rawValue,
                                           encryption: contents.encryption?.rawValue))
        }
        do {
            try validate(blobs[.permanent]!, blobs[.volatile], blobs[.saveState])
        } catch {
            throw SwtpmInteropError(.validationFailed, subject: directory, "libtpms does not accept this state", underlying: error)
        }
        var removed: [String] = []
        let existing = Set(container.entryNames)
        let generation: UInt64
        do {
            for (_, blob) in files {
                if let bytes = blobs[blob] {
                    try container.write(blob.entryName, bytes)
                } else if existing.contains(blob.entryName) {
                    try container.remove(blob.entryName)
                    removed.append(blob.entryName)
                }
            }
            generation = try container.commit()
        } catch {
            // Nothing of a failed import stays staged in the container.
            container.discardPendingChanges()
            throw error
        }
        return SwtpmImportReport(directory: directory, container: container.path, vm: container.vm.uuidString.lowercased(),
                                 generation: generation, key: key.map(keyDescription), files: reports, removedEntries: removed)
    }

    /// Writes the container's TPM entries as an swtpm 0.7 state directory, plain or
    /// encrypted with `key` as swtpm would write them with it. The directory is created
    /// (mode 0700) if missing; an existing one must be empty unless `overwrite`, and no
    /// swtpm may be running on it. Each file is written atomically with mode 0600.
    public static func exportState(
        from container: GuestStateContainer, to directory: String, key: SwtpmKey?, overwrite: Bool = false
    ) throws -> SwtpmExportReport {
        let names = Set(container.entryNames)
        guard names.contains(TPMStateBlob.permanent.entryName) else {
            throw SwtpmInteropError(.missingEntry, subject: container.path,
                                    "the container has no \(TPMStateBlob.permanent.entryName) entry: it holds no TPM state to export")
        }
        // Encode everything before touching the directory.
        var encoded: [(file: String, entry: String, bytes: [UInt8], stateBytes: Int)] = []
        var absent: [String] = []
        for (name, blob) in files {
            guard names.contains(blob.entryName) else { absent.append(name); continue }
            let state = try container.read(blob.entryName)
            encoded.append((name, blob.entryName, try SwtpmStateFile.encode(state, key: key), state.count))
        }

        let created = try prepareDirectory(directory, overwrite: overwrite)
        let lock: OpenFile
        do {
            lock = try lockDirectory(directory)
        } catch {
            if created { try? FileManager.default.removeItem(atPath: directory) }
            throw error
        }
        defer { withExtendedLifetime(lock) {} }

        var removed: [String] = []
        do {
            for name in absent where FileSystem.exists(FileSystem.join(directory, name)) {
                try FileSystem.removeFile(FileSystem.join(directory, name))
                removed.append(name)
            }
            if !removed.isEmpty { try FileSystem.syncDirectory(directory) }
            for file in encoded {
                try FileSystem.writeAtomically(file.bytes, to: FileSystem.join(directory, file.file), mode: FileSystem.privateFileMode)
            }
        } catch {
            // A directory this export made holds nothing else: take it away again.
            if created { try? FileManager.default.removeItem(atPath: directory) }
            throw SwtpmInteropError(.io, subject: directory, "could not write the state files\(created ? "; the new directory was removed" : "")", underlying: error)
        }
        let reports = encoded.reversed().map {
            SwtpmFileReport(file: $0.file, entry: $0.entry, fileBytes: $0.bytes.count, stateBytes: $0.stateBytes,
                            layout: SwtpmStateFile.Contents.Layout.v2.rawValue, encryption: key?.mode.rawValue)
        }
        return SwtpmExportReport(directory: directory, container: container.path, generation: container.generation,
                                 key: key.map(keyDescription), files: reports, createdDirectory: created, removedFiles: removed)
    }

    // MARK: Helpers

    static func keyDescription(_ key: SwtpmKey) -> String {
        switch key.origin {
        case .keyFile(_, let format): "\(key.mode.rawValue), \(format.rawValue) key file"
        case .passphraseFile(_, let kdf): "\(key.mode.rawValue), passphrase file (\(kdf.rawValue))"
        case .bytes: key.mode.rawValue
        }
    }

    static func readStateFile(_ path: String) throws -> [UInt8] {
        do {
            return try FileSystem.readFile(path, limit: SwtpmStateFile.maximumFileByteCount)
        } catch let error as SystemError where error.errno == EFBIG {
            throw SwtpmFormatError(.tooLarge, file: path, offset: SwtpmStateFile.maximumFileByteCount,
                                   "the file is larger than \(SwtpmStateFile.maximumFileByteCount) bytes, far more than any libtpms state")
        } catch {
            throw SwtpmFormatError(.io, file: path, offset: nil, "cannot read it", underlying: error)
        }
    }

    /// Refuses a directory whose lock an swtpm holds: its files may change under us.
    static func checkNotRunning(_ directory: String) throws {
        let path = FileSystem.join(directory, lockFile)
        guard FileSystem.exists(path), let file = try? OpenFile(path: path, mode: .readOnly) else { return }
        if (try? file.tryLock(exclusive: false)) == false {
            throw SwtpmInteropError(.inUse, subject: directory,
                                    "an swtpm is running on this directory (it holds \(lockFile)); stop it first, e.g. `swtpm_ioctl -s --unix CTRL-SOCKET` or shut the VM down")
        }
    }

    /// Takes swtpm's lock for the export, so that no swtpm starts on the files half-way.
    static func lockDirectory(_ directory: String) throws -> OpenFile {
        let path = FileSystem.join(directory, lockFile)
        let file: OpenFile
        do {
            if FileSystem.exists(path) {
                file = try OpenFile(path: path, mode: .readWrite)
            } else {
                file = try OpenFile(creating: path, permissions: FileSystem.privateFileMode)
            }
        } catch {
            throw SwtpmInteropError(.io, subject: directory, "cannot open swtpm's lock file \(lockFile)", underlying: error)
        }
        guard (try? file.tryLock(exclusive: true)) == true else {
            throw SwtpmInteropError(.inUse, subject: directory,
                                    "an swtpm is running on this directory (it holds \(lockFile)); stop it before exporting into it")
        }
        return file
    }

    /// Creates the directory (0700) or checks that an existing one may be written.
    /// Returns whether it was created.
    static func prepareDirectory(_ directory: String, overwrite: Bool) throws -> Bool {
        if !FileSystem.exists(directory) {
            let parent = FileSystem.parentDirectory(of: directory)
            guard FileSystem.isDirectory(parent) else {
                throw SwtpmInteropError(.io, subject: directory, "the parent directory \(parent) does not exist")
            }
            do {
                return try FileSystem.createDirectory(directory, mode: FileSystem.privateDirectoryMode)
            } catch {
                throw SwtpmInteropError(.io, subject: directory, "cannot create the directory", underlying: error)
            }
        }
        guard FileSystem.isDirectory(directory) else {
            throw SwtpmInteropError(.notAStateDirectory, subject: directory, "exists and is not a directory")
        }
        let present: [String]
        do {
            present = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw SwtpmInteropError(.io, subject: directory, "cannot list the directory", underlying: error)
        }
        if !present.isEmpty && !overwrite {
            let shown = present.prefix(4).joined(separator: ", ") + (present.count > 4 ? ", ..." : "")
            throw SwtpmInteropError(.notEmpty, subject: directory,
                                    "the directory is not empty (\(shown)); nothing was written. Pass --force to replace the swtpm state files in it, or name a new directory")
        }
        do {
            try FileSystem.setMode(directory, FileSystem.privateDirectoryMode)
        } catch {
            throw SwtpmInteropError(.io, subject: directory, "cannot set the directory's mode to 0700", underlying: error)
        }
        return false
    }
}
