import GuestVaultCore
/// A container in memory: for tests and the fuzzers, which run the same format code as
/// a file without touching the disk. Syncs do nothing; a staged replacement replaces
/// the bytes when published.
final class MemoryStorage: ContainerStorage {
    let name: String
    private(set) var bytes: [UInt8]

    init(_ bytes: [UInt8] = [], name: String = "memory") {
        self.bytes = bytes
        self.name = name
    }

    func size() throws -> Int64 { Int64(bytes.count) }

    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        let (start, end) = range(offset, count)
        return Array(bytes[start..<end])
    }

    func read(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int {
        precondition(bufferOffset >= 0 && count >= 0 && bufferOffset + count <= buffer.count)
        let (start, end) = range(offset, count)
        buffer.replaceSubrange(bufferOffset..<(bufferOffset + end - start), with: bytes[start..<end])
        return end - start
    }

    func write(_ data: ArraySlice<UInt8>, at offset: Int64) throws {
        guard offset >= 0, let start = Int(exactly: offset), start <= Int.max - data.count else {
            throw ContainerError(.io, subject: name, reason: "write at \(offset) is out of range")
        }
        if bytes.count < start + data.count { bytes += [UInt8](repeating: 0, count: start + data.count - bytes.count) }
        bytes.replaceSubrange(start..<(start + data.count), with: data)
    }

    func syncData() throws {}
    func sync() throws {}

    func firstNonZeroByte(at offset: Int64, count: Int64) throws -> Int64? {
        let (start, end) = range(offset, Int(clamping: count))
        return bytes[start..<end].firstIndex { $0 != 0 }.map(Int64.init)
    }

    func stageReplacement() throws -> any StagedContainerStorage { Staged(target: self) }

    /// Replaces the bytes (the harness's own I/O: a fuzzer reuses one storage).
    func replaceContents(with new: [UInt8]) { bytes = new }

    private func range(_ offset: Int64, _ count: Int) -> (Int, Int) {
        let start = Int(clamping: max(0, min(offset, Int64(bytes.count))))
        let end = start + min(max(count, 0), bytes.count - start)
        return (start, end)
    }

    final class Staged: StagedContainerStorage {
        let target: MemoryStorage
        let staging: MemoryStorage
        var storage: any ContainerStorage { staging }

        init(target: MemoryStorage) {
            self.target = target
            staging = MemoryStorage(name: target.name)
        }

        func publish() throws -> any ContainerStorage {
            target.replaceContents(with: staging.bytes)
            return target
        }
    }
}
