import ArgumentParser
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Benchmarking) import GuestVaultState
import GuestVaultSystem
import GuestVaultVM

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

    @Flag(help: "Also measure what one VM's vTPM costs next to swtpm: idle memory, start to answering, GetRandom round trips (TCP, Unix), a durable NV_Write next to pwrite + fdatasync, and --vms servers writing at once.")
    var footprint = false

    @Flag(name: .customLong("footprint-only"), help: "Only the per-VM footprint measurements (implies --footprint).")
    var footprintOnly = false

    @Flag(help: "Everything: the sealing rows, --tpm, --footprint and --transfer.")
    var all = false

    @Option(name: .customLong("vms"), help: ArgumentHelp("Servers started at once for the many-VMs figure (1 to 512).", valueName: "n"))
    var vmCount = VMCount(checked: 64)

    @Option(name: .customLong("footprint-runs"), help: ArgumentHelp("Runs of the start and round-trip figures (1 to 100).", valueName: "n"))
    var footprintRunCount = FootprintRuns(checked: 5)

    @Option(name: .customLong("serve-binary"), help: ArgumentHelp("The executable whose `serve` the footprint rows measure (default: guestvault-vm beside this binary, the per-VM executable libvirt's front ends run; else this binary).", valueName: "path"))
    var serveBinary: String?

    struct Row: Codable {
        let name: String
        let operationsPerSecond: Double?
        let megabytesPerSecond: Double?
        let microseconds: Double?
        let ratioToOpenSSL: Double?
    }

    /// One row of the issue's goal table: a figure, its reference measured in the same
    /// run, their ratio and whether the goal holds. `--json` carries these under `goals`.
    struct Goal: Codable {
        let name: String
        let unit: String
        let figure: Double
        let spread: [Double]?
        let reference: Double
        let referenceName: String
        let referenceSpread: [Double]?
        let ratio: Double
        let goal: String
        var met: Bool
        let note: String?
        var runRatios: [Double]?

        /// `goal` is "<= X" or ">= X" (optionally followed by words); the ratio is
        /// figure / reference.
        init(name: String, unit: String, figure: Double, spread: [Double]?, reference: Double, referenceName: String,
             referenceSpread: [Double]?, goal: String, higherIsBetter: Bool, note: String?) {
            self.name = name
            self.unit = unit
            self.figure = figure
            self.spread = spread
            self.reference = reference
            self.referenceName = referenceName
            self.referenceSpread = referenceSpread
            self.ratio = reference > 0 ? figure / reference : .infinity
            self.goal = goal
            let bound = goal.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 1
            self.met = higherIsBetter ? ratio >= bound : ratio <= bound
            self.note = note
        }

        func printLine() {
            func value(_ v: Double) -> String { v >= 100 ? String(format: "%.0f", v) : String(format: "%.2f", v) }
            print("  \(name): \(value(figure)) \(unit)" + (spread.map { " (\(value($0[0]))-\(value($0[1])))" } ?? "")
                  + "; \(referenceName): \(value(reference)) \(unit)" + (referenceSpread.map { " (\(value($0[0]))-\(value($0[1])))" } ?? "")
                  + String(format: "; ratio %.2f, goal %@: %@", ratio, goal, met ? "met" : "NOT met")
                  + (note.map { "\n      \($0)" } ?? ""))
        }
    }

    struct Report: Codable {
        let cores: Int
        let loadAverage: [Double]
        let openSSLSpeed16KiBMBps: Double?
        let openSSLSpeed256KiBMBps: Double?
        let rows: [Row]
        let goals: [Goal]
        let tpm: TPMBenchmarkRun.Report?
        let transfer: TransferBenchmarkRun.Report?
    }

    func run() throws {
        var goals: [Goal] = []
        var tpmReport: TPMBenchmarkRun.Report?, transferReport: TransferBenchmarkRun.Report?
        let onlyOne = tpmOnly || transferOnly || footprintOnly
        if tpm || tpmOnly || all {
            tpmReport = try TPMBenchmarkRun(json: json, dir: dir).run()
        }
        if footprint || footprintOnly || all {
            goals += try FootprintBenchmarkRun(json: json, dir: dir, vms: vmCount.value, runs: footprintRunCount.value,
                                            tool: FootprintBenchmarkRun.serveExecutable(serveBinary)).run()
        }
        if transfer || transferOnly || all {
            let (report, goal) = try TransferBenchmarkRun(json: json, dir: dir, mebibytes: transferMiB, rounds: rounds).run()
            transferReport = report
            goals.append(goal)
        }
        if onlyOne && !all {
            if json { try printJSON(Report(cores: ProcessInfo.processInfo.activeProcessorCount, loadAverage: Self.loadAverage(),
                                           openSSLSpeed16KiBMBps: nil, openSSLSpeed256KiBMBps: nil, rows: [], goals: goals,
                                           tpm: tpmReport, transfer: transferReport)) }
            return
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let reference = noOpenSSL ? nil : Self.openSSLSpeed(bytes: 16384)
        let chunkReference = noOpenSSL ? nil : Self.openSSLSpeed(bytes: 262_144)
        var rows: [Row] = []
        func rate(_ name: String, _ r: SealingBenchmarks.Rate) {
            let mbps = r.bytesPerSecond / 1e6
            rows.append(Row(name: name, operationsPerSecond: r.perSecond, megabytesPerSecond: mbps, microseconds: nil,
                            ratioToOpenSSL: reference.map { mbps / $0 }))
            if !json { printRow(rows.last!) }
        }
        if !json {
            print("GuestVault \(GuestVaultVersion.string) benchmark, \(cores) cores, load average \(Self.loadAverage().map { String(format: "%.2f", $0) }.joined(separator: " "))")
            if let reference { print(String(format: "openssl speed -evp aes-256-gcm, 16 KiB blocks, 1 core: %.0f MB/s", reference)) }
            if let chunkReference { print(String(format: "openssl speed -evp aes-256-gcm, 256 KiB blocks (the chunk size), 1 core: %.0f MB/s", chunkReference)) }
            print("")
            print("operation                             ops/s        MB/s   ratio   latency")
        }
        for size in [4 << 10, 64 << 10, 1 << 20] {
            rate("blob seal \(formatBytes(UInt64(size)))", try SealingBenchmarks.blobSeal(size: size, seconds: seconds))
            rate("blob open \(formatBytes(UInt64(size)))", try SealingBenchmarks.blobOpen(size: size, seconds: seconds))
        }
        let total = streamMiB << 20
        let seal1 = try SealingBenchmarks.streamSeal(total: total, threads: 1)
        rate("stream seal \(formatBytes(UInt64(total))), 1 core", seal1)
        let sealN = try SealingBenchmarks.streamSeal(total: total, threads: cores)
        rate("stream seal \(formatBytes(UInt64(total))), \(cores) cores", sealN)
        let open1 = try SealingBenchmarks.streamOpen(total: total, threads: 1)
        rate("stream open \(formatBytes(UInt64(total))), 1 core", open1)
        let openN = try SealingBenchmarks.streamOpen(total: total, threads: cores)
        rate("stream open \(formatBytes(UInt64(total))), \(cores) cores", openN)
        if !noOpenSSL {
            goals += try streamGoals(total: total, cores: cores, first: (seal1, sealN, open1, openN))
        }

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
            try printJSON(Report(cores: cores, loadAverage: Self.loadAverage(), openSSLSpeed16KiBMBps: reference,
                                 openSSLSpeed256KiBMBps: chunkReference, rows: rows, goals: goals,
                                 tpm: tpmReport, transfer: transferReport))
        }
        if !json && !goals.isEmpty {
            print("\ngoals (figure / reference, same run)")
            for goal in goals { goal.printLine() }
        }
    }

    /// The stream goals: `streamRounds` rounds, each measuring the four stream figures
    /// next to `openssl speed -elapsed` (wall clock, like ours) at the chunk size, so
    /// both see the same load. The CPU-time ratio (ours: process CPU seconds; openssl's
    /// default figure is user CPU time) is in the note: it does not move with the load.
    private func streamGoals(total: Int, cores: Int, first: (SealingBenchmarks.Rate, SealingBenchmarks.Rate, SealingBenchmarks.Rate, SealingBenchmarks.Rate))
        throws -> [Goal] {
        var rates: [[SealingBenchmarks.Rate]] = [[first.0], [first.1], [first.2], [first.3]]
        var wall: [Double] = [], cpu: [Double] = [], multi: [Double] = []
        for round in 0..<3 {
            if round > 0 {
                rates[0].append(try SealingBenchmarks.streamSeal(total: total, threads: 1))
                rates[1].append(try SealingBenchmarks.streamSeal(total: total, threads: cores))
                rates[2].append(try SealingBenchmarks.streamOpen(total: total, threads: 1))
                rates[3].append(try SealingBenchmarks.streamOpen(total: total, threads: cores))
            }
            if let w = Self.openSSLSpeed(bytes: 262_144, elapsed: true) { wall.append(w) }
            if cores > 1, let m = Self.openSSLSpeed(bytes: 262_144, elapsed: true, multi: cores) { multi.append(m) }
            if let c = Self.openSSLSpeed(bytes: 262_144, elapsed: false) { cpu.append(c) }
        }
        guard !wall.isEmpty, !cpu.isEmpty else { return [] }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let reference = median(wall), cpuReference = median(cpu)
        let size = formatBytes(UInt64(total))
        let names = ["stream seal \(size), 1 core", "stream seal \(size), \(cores) cores", "stream open \(size), 1 core", "stream open \(size), \(cores) cores"]
        let bounds = ["0.9", "1.8", "0.9", "1.8"]
        return (0..<4).map { i in
            let mbps = rates[i].map { $0.bytesPerSecond / 1e6 }
            let perCPU = rates[i].map { Double($0.bytes) / max($0.cpuSeconds, 1e-9) / 1e6 }
            return Goal(name: names[i], unit: "MB/s", figure: median(mbps), spread: [mbps.min()!, mbps.max()!], reference: reference,
                        referenceName: "openssl speed -evp aes-256-gcm -bytes 262144 -elapsed, 1 core", referenceSpread: [wall.min()!, wall.max()!],
                        goal: ">= \(bounds[i])", higherIsBetter: true,
                        note: String(format: "median of %d rounds, interleaved with openssl; per CPU-second %.0f MB/s vs openssl's user-time figure %.0f MB/s (%.2f)",
                                     mbps.count, median(perCPU), cpuReference, median(perCPU) / cpuReference)
                            + (i % 2 == 1 && !multi.isEmpty
                               ? String(format: "; openssl speed -multi %d -elapsed, the machine's own %d-core figure in the same rounds: %.0f MB/s (%.2f of it)",
                                        cores, cores, median(multi), median(mbps) / median(multi)) : ""))
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

    /// The 1, 5 and 15 minute load averages (/proc/loadavg): how busy the machine was.
    static func loadAverage() -> [Double] {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
        return text.split(separator: " ").prefix(3).compactMap { Double($0) }
    }

    /// `openssl speed -evp aes-256-gcm -bytes N -seconds 2`, in MB/s, or nil.
    /// With `elapsed`, openssl times wall clock (`-elapsed`); without, its default: user
    /// CPU time.
    static func openSSLSpeed(bytes: Int, elapsed: Bool = false, multi: Int = 1) -> Double? {
        let process = Process()
        // openssl speed stops each run with SIGALRM, which this process's threads keep
        // blocked and a child would inherit blocked: start it through perl with an empty
        // signal mask.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else { return nil }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        process.arguments = ["-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new()); exec @ARGV or die",
                             "/usr/bin/openssl", "speed"] + (elapsed ? ["-elapsed"] : []) + (multi > 1 ? ["-multi", String(multi)] : []) + ["-evp", "aes-256-gcm", "-bytes", String(bytes), "-seconds", "2"]
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

/// Servers started at once for the many-VMs figure (1...512).
struct VMCount: BoundedInteger {
    static let range = 1...512
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// Runs of the per-VM start and round-trip figures (1...100).
struct FootprintRuns: BoundedInteger {
    static let range = 1...100
    let value: Int
    init(checked value: Int) { self.value = value }
}
