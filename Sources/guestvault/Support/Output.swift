import Foundation
import GuestVaultCore
import GuestVaultSystem
import GuestVaultVM

/// Reads all of standard input or a file, in pieces. A file is opened with the safe-open
/// checks (O_NOFOLLOW, O_NONBLOCK, regular files only): a directory, FIFO or device is
/// refused with an error naming it, never waited on.
struct ByteSource {
    let path: String?   // nil = standard input
    private let file: OpenFile?
    private let offset = Counter()

    private final class Counter: @unchecked Sendable { var value: Int64 = 0 }

    init(_ argument: InputPath?) throws {
        if let path = argument?.path {
            file = try SafeOpen.existing(path, mode: .readOnly)
            self.path = path
        } else {
            file = nil
            path = nil
        }
    }

    /// Fills up to buffer.count bytes; 0 at the end.
    func read(into buffer: inout [UInt8]) throws -> Int {
        guard let file else {
            let data = try FileHandle.standardInput.read(upToCount: buffer.count) ?? Data()
            data.copyBytes(to: &buffer, count: data.count)
            return data.count
        }
        let count = try file.read(into: &buffer, at: offset.value, count: buffer.count)
        offset.value += Int64(count)
        return count
    }

    /// The size of the input file, nil for standard input.
    var fileSize: UInt64? {
        guard let file, let size = try? file.size() else { return nil }
        return UInt64(size)
    }
}

/// Writes to standard output, or to a file that appears complete (0600) or not at all:
/// the bytes go to a new file staged beside the target (``StagedFile``: O_EXCL,
/// O_NOFOLLOW) that replaces a regular file at the target only once everything was
/// written and synced. A symlink, device, FIFO, socket or directory at the target is
/// refused before anything is written (write to `-` and redirect to write into one).
final class ByteSink {
    private let staged: StagedFile?
    private var offset: Int64 = 0

    init(_ argument: OutputPath?) throws {
        guard let path = argument?.path else {
            staged = nil
            return
        }
        if let kind = try Self.nonRegularKind(at: path) {
            throw CLIError(.outputRefused, "\(path) is \(kind); refusing to replace it or write through it (write to - and redirect instead)",
                           underlying: SystemError("write", path: path, errno: kind == "a symbolic link" ? ELOOP : EEXIST))
        }
        staged = try StagedFile(beside: path, mode: FileSystem.privateFileMode)
    }

    func write(_ bytes: [UInt8]) throws {
        guard let staged else {
            try FileHandle.standardOutput.write(contentsOf: Data(bytes))
            return
        }
        try staged.write(bytes, at: offset)
        offset += Int64(bytes.count)
    }

    /// Makes the file visible under its name (fdatasync, rename, directory fsync).
    func finish() throws {
        try staged?.publish(.replacing)
    }

    /// What is at `path` if it is not a regular file (nil if nothing or a regular
    /// file); the path itself, a symlink is not followed.
    private static func nonRegularKind(at path: String) throws -> String? {
        guard FileSystem.exists(path),
              let type = try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType else { return nil }
        switch type {
        case .typeRegular: return nil
        case .typeSymbolicLink: return "a symbolic link"
        case .typeDirectory: return "a directory"
        case .typeCharacterSpecial, .typeBlockSpecial: return "a device"
        case .typeSocket: return "a socket"
        default: return "not a regular file (a FIFO?)"
        }
    }
}

extension ErrorCode {
    /// The output path holds something the tool does not replace or write through.
    static let outputRefused = ErrorCode("outputRefused", .permission)
}

func formatBytes(_ count: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
}
