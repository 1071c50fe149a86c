import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultSystem

/// The one-writer lock of a container: an open-file-description write lock on
/// `STATE.lock` (0600) beside the container, held while the writer has it open. The lock
/// file names the holder (pid, program, time) so a second opener can say who has it.
///
/// The lock file is opened with ``GuestVaultSystem/SafeOpen/lockFile(_:mode:)``: never
/// through a symlink, only a regular file owned by this user or root and writable by no
/// one else; anything else there is an error and is left as it is.
///
/// Byte ranges (for the shared-storage migration hand-off, docs/SWTPM-PROTOCOL.md 9):
/// byte 0 is the writer's; bytes 1 and on are the hand-off's. An ordinary writer locks
/// the whole file, so it is refused while anyone holds either part. A migration writer
/// (``Scope/migration``) locks byte 0 only; a source that hands the container over
/// keeps a shared lock on bytes 1 and on (``handOff()``) until its process ends, so a
/// third, ordinary writer is refused in the window where no writer holds byte 0.
final class ContainerLock: Sendable {
    enum Scope: Sendable {
        /// The whole file: any other holder, writer or hand-off, refuses it.
        case whole
        /// Byte 0 only: a migration destination, or a source taking the container back.
        case migration
    }

    let path: String
    private let file: OpenFile

    init(containerPath: String, scope: Scope = .whole) throws {
        path = containerPath + ".lock"
        let file: OpenFile
        do {
            file = try SafeOpen.lockFile(path)
        } catch {
            throw ContainerError((error as? SystemError)?.code ?? .io, subject: path,
                                 reason: "cannot open the lock file (it must be a regular file, not a symlink, owned by this user or root and writable only by them)",
                                 underlying: error)
        }
        let held: Bool
        do {
            held = switch scope {
            case .whole: try file.tryLock(.exclusive, start: 0, length: 0)
            case .migration: try file.tryLock(.exclusive, start: 0, length: 1)
            }
        } catch {
            throw ContainerError(.io, subject: path, reason: "cannot lock the lock file", underlying: error)
        }
        guard held else {
            let holder = (try? file.read(at: 0, count: 512)).map { String(decoding: $0, as: UTF8.self) }?
                .trimmingWhitespace() ?? ""
            throw ContainerError(.locked, subject: containerPath,
                                 reason: "in use by another writer (\(holder.isEmpty ? "holder unknown" : holder)); stop it first, or open read-only")
        }
        let program = CommandLine.arguments.first.map { FileSystem.lastComponent(of: $0) } ?? "?"
        let stamp = Self.utcTimestamp()
        let text = Array("pid \(ProcessInfo.processInfo.processIdentifier) (\(program)) since \(stamp)\n".utf8)
        try? file.truncate(to: 0)
        try? file.write(text, at: 0)
        self.file = file
    }

    /// Gives byte 0 (the writer's) up and keeps a shared lock on the rest, in that
    /// order on this one open file, so there is no instant where neither is held. The
    /// lock file then names this process as handing the container over.
    func handOff() throws {
        do {
            guard try file.tryLock(.shared, start: 1, length: 0) else {
                throw ContainerError(.locked, subject: path, reason: "another process holds the hand-off range of the lock file")
            }
            _ = try file.tryLock(.unlock, start: 0, length: 1)
        } catch let error as ContainerError {
            throw error
        } catch {
            throw ContainerError(.io, subject: path, reason: "cannot hand the writer lock over", underlying: error)
        }
        let program = CommandLine.arguments.first.map { FileSystem.lastComponent(of: $0) } ?? "?"
        let stamp = Self.utcTimestamp()
        let text = Array("pid \(ProcessInfo.processInfo.processIdentifier) (\(program)) handing over to a migration destination since \(stamp)\n".utf8)
        try? file.truncate(to: 0)
        try? file.write(text, at: 0)
    }

    /// The time now as `YYYY-MM-DDTHH:MM:SSZ`, from gmtime_r. Not ISO8601DateFormatter:
    /// on Linux that loads ICU's calendar data and the time zone database, which made
    /// this lock the largest single cost of `serve`'s start and of its idle memory
    /// (docs/PERFORMANCE.md).
    static func utcTimestamp() -> String {
        var now = time(nil)
        var parts = tm()
        guard gmtime_r(&now, &parts) != nil else { return "?" }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
