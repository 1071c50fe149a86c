import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem

/// The receiver's partial file, `DEST.partial-<transfer id>`, and its acknowledged
/// offset, `DEST.partial-<transfer id>.ack`: what a retry resumes from.
///
/// Both names can be computed by anyone who can see the container's generation and id,
/// so neither is trusted: a new partial file is created with O_CREAT | O_EXCL |
/// O_NOFOLLOW (never through something another user placed there), an existing one
/// is opened with O_NOFOLLOW and must be a regular file owned by this user and writable
/// by nobody else, and the acknowledged offset is read the same way and written through
/// `DurableFile`. A symlink, FIFO or another user's file where one is expected is an
/// error, never followed.
struct PartialFile {
    let path: String
    let file: OpenFile
    /// The bytes kept from an earlier session (synced before they were acknowledged).
    let have: UInt64

    var ackPath: String { path + ".ack" }

    /// Opens the partial file for a container of `length` bytes going to `destination`:
    /// new, or resumed from what was acknowledged. Checks the free space.
    static func open(for destination: String, transferID: String, length: UInt64) throws -> PartialFile {
        let path = "\(destination).partial-\(transferID)"
        do {
            let free = try FileSystem.availableBytes(at: FileSystem.parentDirectory(of: path))
            func checkRoom(_ have: UInt64) throws {
                guard length - have <= free else {
                    throw TransferError(.tooLarge, "the container needs \(length - have) more bytes next to \(destination); \(free) are free")
                }
            }
            let file: OpenFile
            do {
                file = try OpenFile(creating: path)
            } catch let error as SystemError where error.code == .fileExists {
                file = try openExisting(path)
                guard try file.tryLock() else { throw TransferError(.io, "another receive is writing \(path)") }
                // Resume from what was acknowledged (synced); anything after it may not
                // have reached the disk.
                let have = min(try loadAcknowledged(path + ".ack"), UInt64(clamping: try file.size()), length)
                try file.truncate(to: Int64(have))
                try checkRoom(have)
                return PartialFile(path: path, file: file, have: have)
            }
            do {
                guard try file.tryLock() else { throw TransferError(.io, "another receive is writing \(path)") }
                try checkRoom(0)
            } catch {
                try? FileSystem.removeFile(path)
                throw error
            }
            return PartialFile(path: path, file: file, have: 0)
        } catch let error as TransferError {
            throw error
        } catch {
            throw TransferError(.io, "cannot write \(path)", underlying: error)
        }
    }

    /// An existing file the receiver made: regular, not a symlink, owned by this user,
    /// not writable by group or others.
    static func openExisting(_ path: String) throws -> OpenFile {
        let file = try SafeOpen.existing(path, mode: .readWrite)
        // The open file's owner (through its descriptor, so it is the file just opened).
        let (mode, owner) = try FileSystem.permissions("/proc/self/fd/\(file.descriptor)")
        guard owner == FileSystem.currentUser else {
            throw TransferError(.io, "\(path) is owned by uid \(owner), not by this user: not a partial file this receiver made; remove it")
        }
        guard mode & 0o022 == 0 else {
            throw TransferError(.io, "\(path) is writable by group or others (mode \(String(mode, radix: 8))): not a partial file this receiver made; remove it")
        }
        return file
    }

    /// The acknowledged offset: 8 bytes and their SHA-256/8. 0 if there is none or it
    /// does not verify (the data is re-sent); an error if something other than a file
    /// this receiver made is at its name.
    static func loadAcknowledged(_ path: String) throws -> UInt64 {
        let file: OpenFile
        do { file = try openExisting(path) } catch let error as SystemError where error.isNotFound { return 0 }
        let bytes = try file.read(at: 0, count: 17)
        guard bytes.count == 16, let check = try? SHA256.hash(Array(bytes[0..<8])), Array(check.prefix(8)) == Array(bytes[8..<16]),
              let value = UInt64(bigEndianBytes: bytes[0..<8]) else { return 0 }
        return value
    }

    /// Records that the bytes up to `offset` are synced (written durably, never through
    /// a symlink at the name).
    func storeAcknowledged(_ offset: UInt64) throws {
        let value = offset.bigEndianBytes
        try DurableFile.write(value + Array(try SHA256.hash(value).prefix(8)), to: ackPath)
    }

    /// Removes the partial file, its acknowledged offset, and the lock file the
    /// container code made beside it when the received container was opened.
    func remove() {
        for name in [path, ackPath, path + ".lock"] { try? FileSystem.removeFile(name) }
    }
}
