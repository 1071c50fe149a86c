import ArgumentParser
import Foundation
import GuestVaultSystem

/// Reads all of standard input or a file, in pieces.
struct ByteSource {
    let path: String?   // nil = standard input
    private let handle: FileHandle

    init(_ argument: String?) throws {
        if let argument, argument != "-" {
            guard let handle = FileHandle(forReadingAtPath: argument) else {
                throw ValidationError("cannot read \(argument)")
            }
            self.handle = handle
            path = argument
        } else {
            handle = FileHandle.standardInput
            path = nil
        }
    }

    /// Fills up to buffer.count bytes; 0 at the end.
    func read(into buffer: inout [UInt8]) throws -> Int {
        let data = try handle.read(upToCount: buffer.count) ?? Data()
        data.copyBytes(to: &buffer, count: data.count)
        return data.count
    }

    /// The size of a regular file, nil for a pipe.
    var fileSize: UInt64? {
        guard let path, let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              attributes[.type] as? FileAttributeType == .typeRegular else { return nil }
        return (attributes[.size] as? NSNumber)?.uint64Value
    }
}

/// Writes to standard output, or to a file that appears complete (0600) or not at all.
final class ByteSink {
    private let destination: String?
    private let temporary: String?
    private let handle: FileHandle

    init(_ argument: String?) throws {
        if let argument, argument != "-" {
            let temporary = "\(argument).partial-\(ProcessInfo.processInfo.processIdentifier)"
            guard FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o600]),
                  let handle = FileHandle(forWritingAtPath: temporary) else {
                throw ValidationError("cannot write \(argument)")
            }
            self.handle = handle
            self.temporary = temporary
            destination = argument
        } else {
            handle = FileHandle.standardOutput
            temporary = nil
            destination = nil
        }
    }

    func write(_ bytes: [UInt8]) throws { try handle.write(contentsOf: Data(bytes)) }

    /// Makes the file visible under its name (fsync, rename, directory fsync).
    func finish() throws {
        guard let temporary, let destination else { return }
        try handle.synchronize()
        try handle.close()
        try FileSystem.rename(temporary, to: destination)
        try FileSystem.syncDirectory(FileSystem.parentDirectory(of: destination))
    }

    /// Removes a half-written file after a failure.
    func abandon() {
        guard let temporary else { return }
        try? handle.close()
        try? FileSystem.removeFile(temporary)
    }
}

func formatBytes(_ count: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
}
