import Foundation
import GuestVaultSystem

/// The one-writer lock of a container: an open-file-description write lock on
/// `STATE.lock` (0600) beside the container, held while the writer has it open. The lock
/// file names the holder (pid, program, time) so a second opener can say who has it.
final class ContainerLock {
    let path: String
    private let file: OpenFile

    init(containerPath: String) throws {
        path = containerPath + ".lock"
        let file: OpenFile
        do {
            if FileSystem.exists(path) {
                file = try OpenFile(path: path, mode: .readWrite)
            } else {
                do {
                    file = try OpenFile(creating: path)
                } catch let error as SystemError where error.errno == EEXIST {
                    file = try OpenFile(path: path, mode: .readWrite)
                }
            }
        } catch {
            throw ContainerError(.io, subject: path, reason: "cannot open the lock file: \(error)")
        }
        guard try file.tryLock(exclusive: true) else {
            let holder = (try? file.read(at: 0, count: 512)).map { String(decoding: $0, as: UTF8.self) }?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw ContainerError(.locked, subject: containerPath,
                                 reason: "in use by another writer (\(holder.isEmpty ? "holder unknown" : holder)); stop it first, or open read-only")
        }
        let program = CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent } ?? "?"
        let stamp = ISO8601DateFormatter().string(from: Date())
        let text = Array("pid \(ProcessInfo.processInfo.processIdentifier) (\(program)) since \(stamp)\n".utf8)
        try? file.truncate(to: 0)
        try? file.write(text, at: 0)
        self.file = file
    }
}
