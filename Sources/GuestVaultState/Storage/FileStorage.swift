import GuestVaultSystem

/// A container file, opened without following a symlink and only if it is a regular
/// file (``GuestVaultSystem/SafeOpen``).
final class FileStorage: ContainerStorage {
    let file: OpenFile
    var name: String { file.path }

    init(_ file: OpenFile) { self.file = file }

    /// Opens an existing container file.
    convenience init(existing path: String, mode: OpenFile.Mode) throws {
        self.init(try SafeOpen.existing(path, mode: mode))
    }

    func size() throws -> Int64 { try file.size() }
    func read(at offset: Int64, count: Int) throws -> [UInt8] { try file.read(at: offset, count: count) }
    func read(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int {
        try file.read(into: &buffer, bufferOffset: bufferOffset, at: offset, count: count)
    }
    func write(_ bytes: ArraySlice<UInt8>, at offset: Int64) throws { try file.write(bytes, at: offset) }
    func syncData() throws { try file.syncData() }
    func sync() throws { try file.sync() }
    func firstNonZeroByte(at offset: Int64, count: Int64) throws -> Int64? { try file.firstNonZeroByte(at: offset, count: count) }

    /// A new file beside this one (``GuestVaultSystem/StagedFile``: O_EXCL, O_NOFOLLOW,
    /// 0600, removed unless published), published by rename over it.
    func stageReplacement() throws -> any StagedContainerStorage { try Staged(beside: file.path) }

    final class Staged: StagedContainerStorage {
        let staged: StagedFile
        let storage: any ContainerStorage

        init(beside path: String) throws {
            staged = try StagedFile(beside: path)
            storage = FileStorage(staged.file)
        }

        func publish() throws -> any ContainerStorage {
            try staged.publish(.replacing)
            return try FileStorage(existing: staged.target, mode: .readWrite)
        }
    }
}
