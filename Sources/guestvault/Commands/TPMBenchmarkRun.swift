import ArgumentParser
import Dispatch
import Foundation
import GuestVaultSystem
@_spi(Benchmarking) import GuestVaultTPM

/// The vTPM part of `guestvault benchmark`: each figure next to its reference, measured
/// in the same run with the same client.
struct TPMBenchmarkRun {
    let json: Bool
    let dir: String

    struct Report: Codable {
        var getRandomEngineNanoseconds: Double
        var getRandomDirectNanoseconds: Double
        var nvWriteGuestVaultMicroseconds: Double?
        var nvWriteSwtpmMicroseconds: Double?
        var createTPMEKMilliseconds: Double?
        var swtpmSetupMilliseconds: Double?
        /// Sealed blobs (the default), median of `blobMigrationRounds`.
        var blobMigrationMilliseconds: Double?
        var blobMigrationBytes: [Int]?
        /// The same with `--allow-plaintext-migration` on both servers, in the same run.
        var blobMigrationPlaintextMilliseconds: Double?
        var blobMigrationPlaintextBytes: [Int]?
        var blobMigrationRounds: Int?
    }

    func run() throws -> Report {
        let self_ = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let scratch = FileSystem.join(dir, ".guestvault-tpm-benchmark-\(ProcessInfo.processInfo.processIdentifier)")
        try FileSystem.createDirectory(scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        let random = try TPMBenchmarks.getRandom(rounds: 200)
        var report = Report(getRandomEngineNanoseconds: random.engine, getRandomDirectNanoseconds: random.direct)

        // Manufacture: `guestvault create --tpm --ek` against `swtpm_setup --createek --create-ek-cert`.
        let vault = FileSystem.join(scratch, "vault")
        _ = try Self.run(self_, ["vault", "init", "--vault", vault])
        var create: [Double] = [], setup: [Double] = []
        for i in 0..<7 {
            create.append(try Self.timed(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", FileSystem.join(scratch, "m\(i).state")]))
            if let swtpmSetup = Self.which("swtpm_setup") {
                let state = FileSystem.join(scratch, "swtpm-\(i)")
                try FileSystem.createDirectory(state)
                setup.append(try Self.timed(swtpmSetup, ["--tpm2", "--tpm-state", state, "--createek", "--create-ek-cert", "--overwrite"]))
            }
        }
        report.createTPMEKMilliseconds = create.sorted()[create.count / 2]
        if !setup.isEmpty { report.swtpmSetupMilliseconds = setup.sorted()[setup.count / 2] }

        // NV_Write through each server with the same client.
        let state = FileSystem.join(scratch, "nv.state")
        _ = try Self.run(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        let port = try Self.freePortPair()
        let serve = try Self.start(self_, ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
                                           "--flags", "not-need-init,startup-clear"], port: port + 1)
        do {
            defer { kill(serve.processIdentifier, SIGTERM); serve.waitUntilExit() }
            report.nvWriteGuestVaultMicroseconds = try TPMBenchmarks.nvWriteRoundTrip(port: port, index: 0x0150_0099, rounds: 500)
        }
        if let swtpm = Self.which("swtpm") {
            let swtpmState = FileSystem.join(scratch, "swtpm-nv")
            try FileSystem.createDirectory(swtpmState)
            let port = try Self.freePortPair()
            let server = try Self.start(swtpm, ["socket", "--tpm2", "--tpmstate", "dir=\(swtpmState)", "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                                                "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"], port: port + 1)
            defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
            report.nvWriteSwtpmMicroseconds = try TPMBenchmarks.nvWriteRoundTrip(port: port, index: 0x0150_0099, rounds: 500)
        }

        // Live migration of the blobs between two servers, as QEMU drives it: sealed (the
        // default; the destination holds a copy of the source's container, as send and
        // receive would give it) and in plaintext (--allow-plaintext-migration on both),
        // in the same run, in alternating passes so that both see the same machine load.
        var pairs: [(source: Process, destination: Process, sourcePort: UInt16, destinationPort: UInt16)] = []
        defer {
            // Stopped on every path, a failed measurement included.
            for pair in pairs {
                for server in [pair.source, pair.destination] {
                    kill(server.processIdentifier, SIGTERM)
                    server.waitUntilExit()
                }
            }
        }
        // Both log only errors: plaintext blobs are otherwise logged one by one, and the
        // figure would be of the log line rather than of the blob.
        for (index, extra) in [["--log-level", "error"], ["--log-level", "error", "--allow-plaintext-migration"]].enumerated() {
            let source = FileSystem.join(scratch, "migrate-source-\(index).state")
            let destination = FileSystem.join(scratch, "migrate-destination-\(index).state")
            _ = try Self.run(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", source])
            try FileManager.default.copyItem(atPath: source, toPath: destination)
            // The destination first: the copy is opened before the source's first commit
            // makes it an older copy in the vault's eyes.
            let destinationPort = try Self.freePortPair()
            let destinationServer = try Self.start(self_, ["serve", "--vault", vault, destination, "--server", "tcp:127.0.0.1:\(destinationPort)",
                                                           "--ctrl", "tcp:127.0.0.1:\(destinationPort + 1)"] + extra, port: destinationPort + 1)
            let sourcePort = try Self.freePortPair()
            let sourceServer: Process
            do {
                sourceServer = try Self.start(self_, ["serve", "--vault", vault, source, "--server", "tcp:127.0.0.1:\(sourcePort)",
                                                      "--ctrl", "tcp:127.0.0.1:\(sourcePort + 1)", "--flags", "not-need-init,startup-clear"] + extra,
                                              port: sourcePort + 1)
            } catch {
                kill(destinationServer.processIdentifier, SIGTERM)
                destinationServer.waitUntilExit()
                throw error
            }
            pairs.append((sourceServer, destinationServer, sourcePort, destinationPort))
        }
        var samples: [[Double]] = [[], []]
        var sizes: [[Int]] = [[], []]
        for _ in 0..<2 {
            for (index, pair) in pairs.enumerated() {
                let migration = try TPMBenchmarks.blobMigration(sourceControl: pair.sourcePort + 1, destinationControl: pair.destinationPort + 1, rounds: 21)
                samples[index] += migration.samples
                sizes[index] = migration.blobBytes
            }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        report.blobMigrationMilliseconds = median(samples[0])
        report.blobMigrationBytes = sizes[0]
        report.blobMigrationPlaintextMilliseconds = median(samples[1])
        report.blobMigrationPlaintextBytes = sizes[1]
        report.blobMigrationRounds = samples[0].count

        if json { return report }
        print("vTPM benchmark")
        print(String(format: "  GetRandom(16) through the engine        %8.2f us  (libtpms directly %.2f us, %+.1f%%)",
                     report.getRandomEngineNanoseconds / 1000, report.getRandomDirectNanoseconds / 1000,
                     (report.getRandomEngineNanoseconds / report.getRandomDirectNanoseconds - 1) * 100))
        if let gv = report.nvWriteGuestVaultMicroseconds {
            print(String(format: "  durable NV_Write(64 B) via serve          %8.1f us  median", gv)
                  + (report.nvWriteSwtpmMicroseconds.map { String(format: "  (swtpm 0.7.1, not durable: %.1f us, ratio %.2f)", $0, gv / $0) } ?? ""))
        }
        if let create = report.createTPMEKMilliseconds {
            print(String(format: "  create --tpm --ek                        %8.1f ms  median", create)
                  + (report.swtpmSetupMilliseconds.map { String(format: "  (swtpm_setup --createek --create-ek-cert: %.1f ms, ratio %.2f)", $0, create / $0) } ?? ""))
        }
        if let migration = report.blobMigrationMilliseconds, let bytes = report.blobMigrationBytes {
            print(String(format: "  live migration of the vTPM's blobs, sealed %8.2f ms  median of %d (GET x3, STOP; SET x%d, INIT; blobs %@ B)",
                         migration, report.blobMigrationRounds ?? 0, bytes.filter { $0 > 0 }.count, bytes.map(String.init).joined(separator: " + ")))
            if let plain = report.blobMigrationPlaintextMilliseconds, let plainBytes = report.blobMigrationPlaintextBytes {
                print(String(format: "  the same in plaintext                     %8.2f ms  median of %d (blobs %@ B); sealed/plaintext %.3f",
                             plain, report.blobMigrationRounds ?? 0, plainBytes.map(String.init).joined(separator: " + "), migration / plain))
            }
        }
        print("")
        return report
    }

    static func which(_ name: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(_ path: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func timed(_ path: String, _ arguments: [String]) throws -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let status = try run(path, arguments)
        guard status == 0 else { throw BenchmarkFailure(message: "\(path) \(arguments.joined(separator: " ")) exited \(status)") }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
    }

    static func start(_ path: String, _ arguments: [String], port: UInt16) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<500 {
            if (try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))) != nil { return process }
            usleep(10_000)
        }
        throw BenchmarkFailure(message: "\(path) did not start listening on \(port)")
    }

    static func freePortPair() throws -> UInt16 {
        for _ in 0..<50 {
            // Below the kernel's ephemeral range (32768 on): an outgoing connection's
            // source port cannot take it between this check and the server's bind.
            let candidate = UInt16.random(in: 10000...32000) & ~1
            if let a = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate)),
               let b = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate + 1)) {
                a.close(); b.close()
                return candidate
            }
        }
        throw BenchmarkFailure(message: "no free port pair on 127.0.0.1")
    }

    struct BenchmarkFailure: Error, CustomStringConvertible { let message: String; var description: String { message } }
}

/// What one VM's vTPM costs next to swtpm 0.7.1 with the same TPM and the same client:
/// resident memory when idle, start to the data channel answering, GetRandom round trips
/// over TCP and a Unix socket, a durable NV_Write next to the disk's floor, and `vms`
/// servers writing NV at once next to as many swtpm processes.
struct FootprintBenchmarkRun {
    let json: Bool
    let dir: String
    let vms: Int
    let runs: Int

    struct Server {
        let process: Process
        let data: StreamSocket.Address
        let control: StreamSocket.Address
    }

    enum Kind: String { case guestvault, swtpm }

    /// The executable whose `serve` is measured.
    let tool: String
    /// This executable (the CLI: `vault init`, `create`).
    let cli = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path

    /// `path` if given, else `guestvault-vm` beside this executable (what runs per VM),
    /// else this executable.
    static func serveExecutable(_ path: String?) throws -> String {
        if let path {
            guard FileManager.default.isExecutableFile(atPath: path) else { throw ValidationError("--serve-binary \(path) is not an executable file") }
            return path
        }
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let lean = me.deletingLastPathComponent().appendingPathComponent("guestvault-vm").path
        return FileManager.default.isExecutableFile(atPath: lean) ? lean : me.path
    }

    /// Starts a server on Unix sockets (or TCP when `tcp`), waits until its data channel
    /// answers a GetRandom and returns it with the seconds that took from exec.
    func start(_ kind: Kind, state: String, vault: String, sockets: String, tcp: Bool = false) throws -> (Server, Double) {
        let data: StreamSocket.Address, control: StreamSocket.Address
        var serveArgs: [String] = [], swtpmArgs: [String] = []
        if tcp {
            let port = try TPMBenchmarkRun.freePortPair()
            data = .tcp(host: "127.0.0.1", port: port); control = .tcp(host: "127.0.0.1", port: port + 1)
            serveArgs = ["--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)"]
            swtpmArgs = ["--server", "type=tcp,port=\(port),bindaddr=127.0.0.1", "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1"]
        } else {
            let d = sockets + ".data", c = sockets + ".ctrl"
            data = .unix(path: d); control = .unix(path: c)
            serveArgs = ["--server", "unix:\(d)", "--ctrl", "unix:\(c)"]
            swtpmArgs = ["--server", "type=unixio,path=\(d)", "--ctrl", "type=unixio,path=\(c)"]
        }
        let process = Process()
        switch kind {
        case .guestvault:
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = ["serve", "--vault", vault, state] + serveArgs + ["--flags", "not-need-init,startup-clear"]
        case .swtpm:
            process.executableURL = URL(fileURLWithPath: TPMBenchmarkRun.which("swtpm") ?? "/usr/bin/swtpm")
            process.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(state)"] + swtpmArgs + ["--flags", "not-need-init,startup-clear"]
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let t0 = DispatchTime.now().uptimeNanoseconds
        try process.run()
        do {
            try ServerFootprint.waitForGetRandom(data)
        } catch {
            kill(process.processIdentifier, SIGKILL)
            TransferBenchmarkRun.waitForExit(process)
            throw error
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return (Server(process: process, data: data, control: control), seconds)
    }

    func stop(_ server: Server) {
        kill(server.process.processIdentifier, SIGTERM)
        TransferBenchmarkRun.waitForExit(server.process)
    }

    /// A manufactured TPM for each kind: a container made by `create --tpm [--ek]`, an
    /// swtpm state directory made by `swtpm_setup --createek --create-ek-cert` (or left
    /// empty for swtpm to manufacture on start when `ek` is false).
    func manufacture(_ kind: Kind, at path: String, vault: String, ek: Bool) throws {
        switch kind {
        case .guestvault:
            let status = try TPMBenchmarkRun.run(cli, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm"] + (ek ? ["--ek"] : []) + [path])
            guard status == 0 else { throw TPMBenchmarkRun.BenchmarkFailure(message: "guestvault create --tpm exited \(status)") }
        case .swtpm:
            try FileSystem.createDirectory(path)
            if ek, let setup = TPMBenchmarkRun.which("swtpm_setup") {
                let status = try TPMBenchmarkRun.run(setup, ["--tpm2", "--tpm-state", path, "--createek", "--create-ek-cert", "--overwrite"])
                guard status == 0 else { throw TPMBenchmarkRun.BenchmarkFailure(message: "swtpm_setup exited \(status)") }
            }
        }
    }

    func run() throws -> [BenchmarkCommand.Goal] {
        guard TPMBenchmarkRun.which("swtpm") != nil else {
            throw TPMBenchmarkRun.BenchmarkFailure(message: "swtpm is not installed: the per-VM figures need it as their reference")
        }
        let scratch = FileSystem.join(dir, ".gv-footprint-\(ProcessInfo.processInfo.processIdentifier)")
        try FileSystem.createDirectory(scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let vault = FileSystem.join(scratch, "vault")
        _ = try TPMBenchmarkRun.run(cli, ["vault", "init", "--vault", vault])
        var goals: [BenchmarkCommand.Goal] = []
        func add(_ goal: BenchmarkCommand.Goal) {
            goals.append(goal)
            if !json { goal.printLine() }
        }
        if !json { print("per-VM footprint next to swtpm 0.7.1 (same TPM, same client)") }

        // Manufactured TPMs with EKs and certificates, one of each kind.
        let states: [Kind: String] = [.guestvault: FileSystem.join(scratch, "vm.state"), .swtpm: FileSystem.join(scratch, "swtpm-state")]
        for (kind, path) in states { try manufacture(kind, at: path, vault: vault, ek: true) }

        // Start to the data channel answering, interleaved; the last start of each stays
        // up for the memory and round-trip figures.
        var startTimes: [Kind: [Double]] = [:]
        var live: [Kind: Server] = [:]
        for round in 0..<(runs * 2 + 1) {
            for kind in round % 2 == 0 ? [Kind.guestvault, .swtpm] : [.swtpm, .guestvault] {
                let (server, seconds) = try start(kind, state: states[kind]!, vault: vault, sockets: FileSystem.join(scratch, "\(kind.rawValue)-sock"))
                if round > 0 { startTimes[kind, default: []].append(seconds * 1e3) }
                if round == runs * 2 { live[kind] = server } else { stop(server) }
            }
        }
        defer { for server in live.values { stop(server) } }
        let startGV = median(startTimes[.guestvault]!), startSwtpm = median(startTimes[.swtpm]!)
        add(.init(name: "serve start to the data channel answering GetRandom", unit: "ms", figure: startGV, spread: spread(startTimes[.guestvault]!),
                  reference: startSwtpm, referenceName: "swtpm 0.7.1 socket, same flags and client", referenceSpread: spread(startTimes[.swtpm]!),
                  goal: "<= 1.0", higherIsBetter: false, note: "median of \(startTimes[.guestvault]!.count) starts each, interleaved, Unix sockets; `\(URL(fileURLWithPath: tool).lastPathComponent) serve`"))

        // Idle resident memory after manufacture and startup.
        usleep(500_000)
        let memGV = try ServerFootprint.memory(pid: live[.guestvault]!.process.processIdentifier)
        let memSwtpm = try ServerFootprint.memory(pid: live[.swtpm]!.process.processIdentifier)
        add(.init(name: "serve resident memory, idle (RSS)", unit: "KiB", figure: Double(memGV.rssKiB), spread: nil,
                  reference: Double(memSwtpm.rssKiB), referenceName: "swtpm 0.7.1, same TPM (EK, certificates), idle", referenceSpread: nil,
                  goal: "<= 1.0", higherIsBetter: false,
                  note: "`\(URL(fileURLWithPath: tool).lastPathComponent) serve`; PSS \(memGV.pssKiB) vs \(memSwtpm.pssKiB) KiB, private \(memGV.privateKiB) vs \(memSwtpm.privateKiB) KiB, anonymous \(memGV.anonymousKiB) vs \(memSwtpm.anonymousKiB) KiB"))
        if !json {
            print("    largest resident mappings of serve: " + (try ServerFootprint.residentByMapping(pid: live[.guestvault]!.process.processIdentifier))
                .prefix(8).map { "\(URL(fileURLWithPath: $0.name).lastPathComponent) \($0.kib)" }.joined(separator: ", ") + " (KiB)")
        }

        // GetRandom round trips: Unix sockets on the servers above, TCP on a second pair.
        for kind in [Kind.guestvault, .swtpm] { stop(live[kind]!) }
        live = [:]
        var tcp: [Kind: Server] = [:], unix: [Kind: Server] = [:]
        for kind in [Kind.guestvault, .swtpm] {
            unix[kind] = try start(kind, state: states[kind]!, vault: vault, sockets: FileSystem.join(scratch, "\(kind.rawValue)-sock")).0
        }
        live = unix
        for (transport, servers, pinned) in [("Unix socket", unix, false), ("Unix socket, client and servers on CPU 0", unix, true), ("TCP", [:], false)] {
            var servers = servers
            if transport == "TCP" {
                for kind in [Kind.guestvault, .swtpm] { stop(unix[kind]!) }
                // A second copy of each TPM: the Unix servers held the state locks.
                for kind in [Kind.guestvault, .swtpm] {
                    tcp[kind] = try start(kind, state: states[kind]!, vault: vault, sockets: "", tcp: true).0
                }
                live = tcp
                servers = tcp
            }
            var ratios: [Double] = [], gv: [Double] = [], sw: [Double] = []
            for round in 0..<runs {
                _ = round
                let pair = try ServerFootprint.getRandomPair(servers[.guestvault]!.data, servers[.swtpm]!.data, rounds: 3000,
                                                             pin: pinned ? [servers[.guestvault]!.process.processIdentifier, servers[.swtpm]!.process.processIdentifier] : [])
                gv.append(pair.a); sw.append(pair.b)
                ratios.append(pair.a / pair.b)
            }
            var goal = BenchmarkCommand.Goal(name: "GetRandom(16) round trip through serve, \(transport)", unit: "us", figure: median(gv), spread: spread(gv),
                                             reference: median(sw), referenceName: "swtpm 0.7.1, same client", referenceSpread: spread(sw),
                                             goal: "<= 1.0 in every run", higherIsBetter: false,
                                             note: "each run: 3,000 round trips to each, alternating blocks of 50; ratio per run: " + ratios.map { String(format: "%.2f", $0) }.joined(separator: ", "))
            goal.runRatios = ratios
            goal.met = ratios.allSatisfy { $0 <= 1.0 }
            add(goal)
        }

        // Durable NV_Write(64 B) next to pwrite + fdatasync of 64 B in the same directory.
        for kind in [Kind.guestvault, .swtpm] { stop(live[kind]!) }
        live = [:]
        let nvServer = try start(.guestvault, state: states[.guestvault]!, vault: vault, sockets: FileSystem.join(scratch, "nv-sock")).0
        live[.guestvault] = nvServer
        let cpuBefore = ServerFootprint.cpuNanoseconds(pid: nvServer.process.processIdentifier)
        let (nv, floor, appended, recordFloor) = try nvWriteAgainstFloor(nvServer, container: states[.guestvault]!, in: scratch, rounds: 500)
        let cpuAfter = ServerFootprint.cpuNanoseconds(pid: nvServer.process.processIdentifier)
        // The server's own CPU per write (all threads), beside the wall-clock figure.
        let cpuPerWrite = cpuBefore.flatMap { before in cpuAfter.map { Double($0 - before) / 1e3 / 520 } }
        add(.init(name: "durable NV_Write(64 B) through serve", unit: "us", figure: nv, spread: nil,
                  reference: floor, referenceName: "pwrite + fdatasync of 64 B, same directory", referenceSpread: nil,
                  goal: "<= 1.15", higherIsBetter: false,
                  note: String(format: "median of 500, interleaved, Unix socket; the container grows %d B per write; pwrite + fdatasync of that many bytes into a preallocated file there: %.0f us (ratio %.2f); serve's CPU per write, user and system, all threads: %@",
                               appended, recordFloor, nv / recordFloor, cpuPerWrite.map { String(format: "%.0f us", $0) } ?? "n/a")))
        stop(nvServer)
        live = [:]

        // `vms` servers each writing NV at once, next to as many swtpm processes.
        var aggregate: [Kind: (rate: Double, flushes: Double?)] = [:]
        var perVMPSS: [Kind: Double] = [:]
        for kind in [Kind.swtpm, .guestvault] {
            var servers: [Server] = []
            defer { for server in servers { stop(server) } }
            for n in 0..<vms {
                let state = FileSystem.join(scratch, "\(kind.rawValue)-\(n)")
                try manufacture(kind, at: state + (kind == .guestvault ? ".state" : ""), vault: vault, ek: false)
                servers.append(try start(kind, state: state + (kind == .guestvault ? ".state" : ""), vault: vault,
                                         sockets: FileSystem.join(scratch, "m\(kind == .guestvault ? "g" : "s")\(n)")).0)
            }
            // What each VM costs when many run: shared pages are divided among the
            // processes that map them (PSS), idle after start.
            usleep(300_000)
            var pss = 0
            for server in servers { pss += try ServerFootprint.memory(pid: server.process.processIdentifier).pssKiB }
            perVMPSS[kind] = Double(pss) / Double(servers.count)
            let flushes0 = ServerFootprint.flushCount(under: scratch)
            let t0 = DispatchTime.now().uptimeNanoseconds
            let rate = try ServerFootprint.concurrentNVWrites(servers.map(\.data), index: 0x0150_0098, seconds: 3)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let flushes1 = ServerFootprint.flushCount(under: scratch)
            let flushes = flushes0.flatMap { before in flushes1.map { Double($0 - before) / elapsed } }
            aggregate[kind] = (rate, flushes)
        }
        add(.init(name: "memory per VM with \(vms) serve processes running (PSS)", unit: "KiB", figure: perVMPSS[.guestvault]!, spread: nil,
                  reference: perVMPSS[.swtpm]!, referenceName: "\(vms) swtpm 0.7.1 processes", referenceSpread: nil,
                  goal: "<= 1.0", higherIsBetter: false,
                  note: "not a row of the issue's table: the idle RSS row's memory as a host with many VMs pays it (the executable's and libraries' pages shared, each process charged its share); `\(URL(fileURLWithPath: tool).lastPathComponent) serve`"))
        let (gvRate, gvFlushes) = aggregate[.guestvault]!, (swRate, swFlushes) = aggregate[.swtpm]!
        add(.init(name: "\(vms) serve processes writing NV at once, aggregate", unit: "writes/s", figure: gvRate, spread: nil,
                  reference: swRate, referenceName: "\(vms) swtpm 0.7.1 processes (not durable)", referenceSpread: nil,
                  goal: ">= 0.5", higherIsBetter: true,
                  note: "disk cache flushes/s during the run: " + (gvFlushes.map { String(format: "%.0f", $0) } ?? "n/a")
                    + " (swtpm run: " + (swFlushes.map { String(format: "%.0f", $0) } ?? "n/a") + ")"))
        if !json { print("") }
        return goals
    }

    /// Median microseconds of a durable NV_Write(64 B) through `server` and of pwrite +
    /// fdatasync of 64 bytes in the same directory, interleaved; and how many bytes the
    /// container grew per write.
    func nvWriteAgainstFloor(_ server: Server, container: String, in scratch: String, rounds: Int) throws -> (Double, Double, Int, Double) {
        let client = try ServerFootprint.Client(server.data)
        try ServerFootprint.defineNV(client, index: 0x0150_0099)
        let plain = try OpenFile(creating: FileSystem.join(scratch, "floor.bin"))
        try plain.write([UInt8](repeating: 0, count: 64 * 64), at: 0)
        try plain.sync()
        let payload = [UInt8](repeating: 0x5a, count: 64)
        var nvTimes: [Double] = [], floorTimes: [Double] = []
        var sizeBefore = 0
        for i in 0..<(rounds + 20) {
            if i == 20 { sizeBefore = Self.size(container) }
            let command = ServerFootprint.nvWriteCommand(index: 0x0150_0099, fill: UInt8(truncatingIfNeeded: i))
            let t0 = DispatchTime.now().uptimeNanoseconds
            let code = try client.roundTrip(command)
            let t1 = DispatchTime.now().uptimeNanoseconds
            guard code == 0 else { throw TPMBenchmarkRun.BenchmarkFailure(message: "TPM2_NV_Write answered \(code)") }
            try plain.write(payload, at: Int64((i % 64) * 64))
            try plain.syncData()
            let t2 = DispatchTime.now().uptimeNanoseconds
            if i >= 20 {
                nvTimes.append(Double(t1 - t0) / 1e3)
                floorTimes.append(Double(t2 - t1) / 1e3)
            }
        }
        let appended = (Self.size(container) - sizeBefore) / rounds
        // The record's size appended into zeroes written beforehand, as the container
        // appends into its preallocated region.
        let record = try OpenFile(creating: FileSystem.join(scratch, "floor-record.bin"))
        let bytes = [UInt8](repeating: 0x5a, count: max(appended, 1))
        try record.write([UInt8](repeating: 0, count: bytes.count * (rounds + 1)), at: 0)
        try record.sync()
        var recordTimes: [Double] = []
        for i in 0..<rounds {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try record.write(bytes, at: Int64(i * bytes.count))
            try record.syncData()
            recordTimes.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3)
        }
        return (median(nvTimes), median(floorTimes), appended, median(recordTimes))
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    func spread(_ values: [Double]) -> [Double] { [values.min() ?? 0, values.max() ?? 0] }
}
