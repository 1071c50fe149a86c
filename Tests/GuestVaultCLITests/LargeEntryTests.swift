import Foundation
import Testing

/// A 1 GiB `vm.runtime` goes into a container and comes back out through the CLI, and
/// the peak memory of `put` and `get` does not grow with the entry's size.
@Suite struct LargeEntryTests {
    static var gibibytes: Int { Int(ProcessInfo.processInfo.environment["GUESTVAULT_LARGE_GIB"] ?? "") ?? 1 }

    /// Runs the CLI under GNU time and returns (exit status, peak RSS in KiB, stderr).
    func measured(_ arguments: [String]) throws -> (Int32, Int, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/time")
        process.arguments = ["-f", "maxrss=%M", CLIRunner.binary.path] + arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let rss = text.split(separator: "\n").last { $0.hasPrefix("maxrss=") }.flatMap { Int($0.dropFirst(7)) } ?? -1
        return (process.terminationStatus, rss, text)
    }

    func makeFile(_ path: String, mebibytes: Int) throws {
        let dd = Process()
        dd.executableURL = URL(fileURLWithPath: "/bin/dd")
        dd.arguments = ["if=/dev/urandom", "of=\(path)", "bs=1M", "count=\(mebibytes)", "status=none"]
        try dd.run()
        dd.waitUntilExit()
        #expect(dd.terminationStatus == 0)
    }

    func sameContent(_ a: String, _ b: String) throws -> Bool {
        let cmp = Process()
        cmp.executableURL = URL(fileURLWithPath: "/usr/bin/cmp")
        cmp.arguments = ["-s", a, b]
        try cmp.run()
        cmp.waitUntilExit()
        return cmp.terminationStatus == 0
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "needs GNU time (apt install time)"))
    func oneGiBRuntimeStateRoundTripsInConstantMemory() throws {
        let dir = NSTemporaryDirectory() + "guestvault-large-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vault = "\(dir)/vault", state = "\(dir)/vm.state"
        #expect(try CLIRunner.run(["vault", "init", "--vault", vault]).status == 0)
        #expect(try CLIRunner.run(["create", "--vault", vault, "--vm", UUID().uuidString, state]).status == 0)

        try makeFile("\(dir)/small", mebibytes: 64)
        let (s1, smallRSS, e1) = try measured(["put", "--vault", vault, state, "vm.runtime", "\(dir)/small"])
        #expect(s1 == 0, "\(e1)")
        try FileManager.default.removeItem(atPath: "\(dir)/small")

        let size = Self.gibibytes * 1024
        try makeFile("\(dir)/big", mebibytes: size)
        let (s2, bigRSS, e2) = try measured(["put", "--vault", vault, state, "vm.runtime", "\(dir)/big"])
        #expect(s2 == 0, "\(e2)")
        let (s3, getRSS, e3) = try measured(["get", "--vault", vault, state, "vm.runtime", "\(dir)/out"])
        #expect(s3 == 0, "\(e3)")
        #expect(try sameContent("\(dir)/big", "\(dir)/out"), "the entry came back byte for byte")
        print("large entry: put 64 MiB peak RSS \(smallRSS / 1024) MiB, put \(size) MiB peak RSS \(bigRSS / 1024) MiB, get \(size) MiB peak RSS \(getRSS / 1024) MiB")
        #expect(bigRSS > 0 && bigRSS < smallRSS + 48 * 1024, "memory grew with the entry's size")
        #expect(getRSS > 0 && getRSS < smallRSS + 48 * 1024, "memory grew with the entry's size")
    }
}
