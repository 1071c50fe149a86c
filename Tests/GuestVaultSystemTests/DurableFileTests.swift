import Foundation
import GuestVaultSystem
import Testing

@Suite struct DurableFileTests {
    private func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "gv-durable-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    @Test func writesPrivateFileAndReplacesAtomically() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/a"
        try DurableFile.write([1, 2, 3], to: path)
        try DurableFile.write([4, 5], to: path)
        #expect(try FileSystem.readFile(path, limit: 10) == [4, 5])
        #expect(try FileSystem.permissions(path).mode == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["a"])
    }

    @Test func refusesToReplaceSymlinkAndLeavesItsTargetAlone() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data([9]).write(to: URL(fileURLWithPath: dir + "/victim"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/out", withDestinationPath: dir + "/victim")
        #expect(throws: SystemError.self) { try DurableFile.write([1], to: dir + "/out") }
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/victim")) == Data([9]))
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == ["victim", "out"])
    }

    @Test func creatingNewNeverReplaces() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try DurableFile.write([1], to: dir + "/x", .creatingNew)
        #expect(throws: SystemError.self) { try DurableFile.write([2], to: dir + "/x", .creatingNew) }
        #expect(try FileSystem.readFile(dir + "/x", limit: 10) == [1])
    }

    @Test func lockFileRefusesSymlinkAndFIFO() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data([7]).write(to: URL(fileURLWithPath: dir + "/target"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.lock", withDestinationPath: dir + "/target")
        #expect(throws: SystemError.self) { _ = try SafeOpen.lockFile(dir + "/link.lock") }
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        #expect(throws: SystemError.self) { _ = try SafeOpen.lockFile(dir + "/fifo") }
        #expect(throws: SystemError.self) { _ = try FileSystem.readFile(dir + "/fifo", limit: 10) }
        #expect(throws: SystemError.self) { _ = try SafeOpen.existing(dir + "/link.lock", mode: .readOnly) }
        let lock = try SafeOpen.lockFile(dir + "/ok.lock")
        #expect(try lock.tryLock())
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/target")) == Data([7]))
    }
}
