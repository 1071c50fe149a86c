import ArgumentParser
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Benchmarking) import GuestVaultState
import GuestVaultSystem

struct BenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark",
        abstract: "Measure sealing, key derivation and commit speed on this machine (like `cryptsetup benchmark`).",
        discussion: """
            Everything runs through the same code as real containers: entry keys, associated
            data, stream chunking and parallel sealing, durable commits. Sealing is measured
            in memory; commit latency on disk, in --dir (default: the current directory),
            next to a plain pwrite + fdatasync of the same size there. With OpenSSL's
            command-line tool installed, `openssl speed -evp aes-256-gcm` (16 KiB blocks) is
            run too and each throughput is shown as a ratio to it.

            --transfer sends a container holding one --transfer-mib entry (1 GiB) from
            `guestvault send` to `guestvault receive` over loopback TCP into --dir, after one
            warm-up round, and shows the median end-to-end rate next to a plain durable
            write of the same bytes there (fdatasync every 64 MiB, as the receiver does).
            Examples:
              guestvault benchmark --transfer-only --dir /var/lib/guestvault
              guestvault benchmark --transfer-only --dir /dev/shm --rounds 9

            Build with `swift build -c release` for meaningful figures.
            """)

    @Flag(help: "Print as JSON.")
    var json = false

    @Option(name: .customLong("stream-mib"), help: ArgumentHelp("Size of the stream measurement, in MiB (16 to 1048576).", valueName: "mib"))
    var streamSize = StreamMiB(checked: 1024)
    var streamMiB: Int { streamSize.value }

    @Option(name: .customLong("seconds"), help: ArgumentHelp("Seconds per small-entry measurement (above 0, at most 3600).", valueName: "s"))
    var duration = PositiveSeconds(seconds: 1)
    var seconds: Double { duration.seconds }

    @Option(name: .customLong("commits"), help: ArgumentHelp("Commits to time for the latency figures (at least 10).", valueName: "n"))
    var commitCount = CommitCount(checked: 300)
    var commits: Int { commitCount.value }

    @Option(help: ArgumentHelp("Directory for the on-disk commit measurement.", valueName: "dir"))
    var dir: String = "."

    @Flag(name: .customLong("no-openssl"), help: "Skip running `openssl speed` for the reference figure.")
    var noOpenSSL = false

    @Option(name: .customLong("vault"), help: ArgumentHelp("Also measure KEK derivations on this vault (e.g. a PKCS#11 vault).", valueName: "dir"))
    var extraVault: String?

    @Flag(help: "Also measure the vTPM: GetRandom through the engine against libtpms directly, a durable NV_Write through `guestvault serve` next to swtpm's, and manufacture next to swtpm_setup.")
    var tpm = false

    @Flag(help: "Only the vTPM measurements (implies --tpm).")
    var tpmOnly = false

    @Flag(help: "Also measure a container transfer over loopback TCP into --dir, next to a plain durable write of the same bytes there.")
    var transfer = false

    @Flag(help: "Only the transfer measurement (implies --transfer).")
    var transferOnly = false

    @Option(name: .customLong("transfer-mib"), help: ArgumentHelp("Size of the transferred entry, in MiB (at least 1).", valueName: "mib"))
    var transferSize = TransferMiB(checked: 1024)
    var transferMiB: Int { transferSize.value }

    @Option(name: .customLong("rounds"), help: ArgumentHelp("Transfer rounds, the median is reported (1 to 1000).", valueName: "n"))
    var roundCount = RoundCount(checked: 3)
    var rounds: Int { roundCount.value }

    struct Row: Codable {
        let name: String
        let operationsPerSecond: Double?
        let megabytesPerSecond: Double?
        let microseconds: Double?
        let ratioToOpenSSL: Double?
    }

    struct Report: Codable {
        let cores: Int
        let openSSLSpeed16KiBMBps: Double?
        let rows: [Row]
    }

    func run() throws {
        if tpm || tpmOnly {
            try TPMBenchmarkRun(json: json, dir: dir).run()
            if tpmOnly { return }
        }
        if transfer || transferOnly {
            try TransferBenchmarkRun(json: json, dir: dir, mebibytes: transferMiB, rounds: rounds).run()
            if transferOnly { return }
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let reference = noOpenSSL ? nil : Self.openSSLSpeed()
        var rows: [Row] = []
        func rate(_ name: String, _ r: SealingBenchmarks.Rate) {
            let mbps = r.bytesPerSecond / 1e6
            rows.append(Row(name: name, operationsPerSecond: r.perSecond, megabytesPerSecond: mbps, microseconds: nil,
                            ratioToOpenSSL: reference.map { mbps / $0 }))
            if !json { printRow(rows.last!) }
        }
        if !json {
            print("GuestVault \(GuestVaultVersion.string) benchmark, \(cores) cores")
            if let reference { print(String(format: "openssl speed -evp aes-256-gcm, 16 KiB blocks, 1 core: %.0f MB/s", reference)) }
            print("")
            print("operation                             ops/s        MB/s   ratio   latency")
        }
        for size in [4 << 10, 64 << 10, 1 << 20] {
            rate("blob seal \(formatBytes(UInt64(size)))", try SealingBenchmarks.blobSeal(size: size, seconds: seconds))
            rate("blob open \(formatBytes(UInt64(size)))", try SealingBenchmarks.blobOpen(size: size, seconds: seconds))
        }
        let total = streamMiB << 20
        rate("stream seal \(formatBytes(UInt64(total))), 1 core", try SealingBenchmarks.streamSeal(total: total, threads: 1))
        rate("stream seal \(formatBytes(UInt64(total))), \(cores) cores", try SealingBenchmarks.streamSeal(total: total, threads: cores))
        rate("stream open \(formatBytes(UInt64(total))), 1 core", try SealingBenchmarks.streamOpen(total: total, threads: 1))
        rate("stream open \(formatBytes(UInt64(total))), \(cores) cores", try SealingBenchmarks.streamOpen(total: total, threads: cores))

        let scratch = FileSystem.join(dir, ".guestvault-benchmark-\(ProcessInfo.processInfo.processIdentifier)")
        try FileSystem.createDirectory(scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let vault = try KeyVault.createFileVault(at: FileSystem.join(scratch, "vault"))
        let kek = try measureKEK(vault)
        rows.append(Row(name: "per-VM KEK derivation", operationsPerSecond: kek, megabytesPerSecond: nil, microseconds: 1e6 / kek, ratioToOpenSSL: nil))
        if !json { printRow(rows.last!) }

        if let extraVault {
            let other = try KeyVault.open(at: extraVault)
            let rate = try measureKEK(other)
            rows.append(Row(name: "KEK derivation, \(other.backend.kind) vault", operationsPerSecond: rate, megabytesPerSecond: nil, microseconds: 1e6 / rate, ratioToOpenSSL: nil))
            if !json { printRow(rows.last!) }
        }

        let (commit, baseline) = try measureCommits(vault: vault, in: scratch)
        rows.append(Row(name: "pwrite+fdatasync 8 KiB (baseline)", operationsPerSecond: 1e6 / baseline, megabytesPerSecond: nil, microseconds: baseline, ratioToOpenSSL: nil))
        if !json { printRow(rows.last!) }
        rows.append(Row(name: "durable commit of 8 KiB entry", operationsPerSecond: 1e6 / commit, megabytesPerSecond: nil, microseconds: commit, ratioToOpenSSL: nil))
        if !json {
            printRow(rows.last!)
            print(String(format: "\ncommit / baseline: %.2fx (median of %d)", commit / baseline, commits))
        } else {
            try printJSON(Report(cores: cores, openSSLSpeed16KiBMBps: reference, rows: rows))
        }
    }

    private func printRow(_ row: Row) {
        let ops = row.operationsPerSecond.map { String(format: "%12.0f", $0) } ?? String(repeating: " ", count: 12)
        let mbps = row.megabytesPerSecond.map { String(format: "%11.0f", $0) } ?? String(repeating: " ", count: 11)
        let ratio = row.ratioToOpenSSL.map { String(format: "%7.2f", $0) } ?? String(repeating: " ", count: 7)
        let latency = row.microseconds.map { String(format: "%8.1f us", $0) } ?? ""
        print("\(row.name.padding(toLength: 34, withPad: " ", startingAt: 0))\(ops)\(mbps)\(ratio)\(latency)")
    }

    private func measureKEK(_ vault: KeyVault) throws -> Double {
        let vm = UUID()
        var count = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0
        repeat {
            for epoch in 0..<1000 { _ = try vault.kek(vm: vm, epoch: UInt32(epoch)) }
            count += 1000
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < seconds
        return Double(count) / elapsed
    }

    /// Median microseconds of a durable 8 KiB commit and of pwrite+fdatasync of 8 KiB,
    /// interleaved in the same directory.
    private func measureCommits(vault: KeyVault, in scratch: String) throws -> (Double, Double) {
        let container = try GuestStateContainer.create(at: FileSystem.join(scratch, "bench.state"), vm: UUID(), vault: vault)
        let plain = try OpenFile(creating: FileSystem.join(scratch, "plain"))
        try plain.write([UInt8](repeating: 0, count: 8192 * 64), at: 0)
        try plain.sync()
        var commitTimes: [Double] = [], plainTimes: [Double] = []
        let payload = [UInt8](repeating: 0x5A, count: 8192)
        for i in 0..<commits {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try container.write("tpm.permanent", payload)
            try container.commit()
            let t1 = DispatchTime.now().uptimeNanoseconds
            try plain.write(payload, at: Int64((i % 64) * 8192))
            try plain.syncData()
            let t2 = DispatchTime.now().uptimeNanoseconds
            commitTimes.append(Double(t1 - t0) / 1e3)
            plainTimes.append(Double(t2 - t1) / 1e3)
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        return (median(commitTimes), median(plainTimes))
    }

    /// `openssl speed -evp aes-256-gcm -bytes 16384 -seconds 2`, in MB/s, or nil.
    static func openSSLSpeed() -> Double? {
        let process = Process()
        // openssl speed stops each run with SIGALRM, which this process's threads keep
        // blocked and a child would inherit blocked: start it through perl with an empty
        // signal mask.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else { return nil }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        process.arguments = ["-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new()); exec @ARGV or die",
                             "/usr/bin/openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", "2"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // The result line: "AES-256-GCM    2236981.25k" (thousands of bytes per second).
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("AES-256-GCM") }),
              let field = line.split(separator: " ").last, field.hasSuffix("k"),
              let value = Double(field.dropLast()) else { return nil }
        return value / 1e3
    }
}
