import Dispatch
import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTransfer

/// The transfer part of `guestvault benchmark`: a container holding one large
/// `vm.runtime` entry sent over loopback TCP by `guestvault send` to `guestvault receive`
/// with its own vault (recipient-key mode, sender authenticated), end to end —
/// handshake, every frame, the receiver's durable writes and its commit — next to what
/// the receiver's disk alone takes: the same bytes
/// written in 1 MiB pieces with an fdatasync every 64 MiB and at the end, in the same
/// directory, in the same run.
struct TransferBenchmarkRun {
    let json: Bool
    let dir: String
    let mebibytes: Int
    let rounds: Int

    struct Report: Codable {
        let bytes: UInt64
        let directory: String
        let transferMBps: [Double]
        let transferMedianMBps: Double
        let durableWriteMBps: [Double]
        let durableWriteMedianMBps: Double
        let ratio: Double
    }

    func run() throws -> (Report, BenchmarkCommand.Goal) {
        let scratch = FileSystem.join(dir, ".guestvault-transfer-benchmark-\(ProcessInfo.processInfo.processIdentifier)")
        try FileSystem.createDirectory(scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let sourcePath = FileSystem.join(scratch, "source-vault")
        let source = try KeyVault.createFileVault(at: sourcePath)
        let statePath = FileSystem.join(scratch, "source.state")
        let length = try Self.makeSource(at: statePath, vault: source, mebibytes: mebibytes)
        if !json {
            print("transfer: \(formatBytes(length)) container over loopback TCP into \(dir), \(rounds) rounds after one warm-up")
        }

        var transfer: [Double] = [], durable: [Double] = []
        // One round first that is not counted: the first transfers after making the
        // source run measurably slower (page cache and memory settling).
        for round in -1..<rounds {
            // A vault per round: a vault that holds generation g + 1 of a VM rightly
            // refuses generation g of it again (rollback).
            let destinationPath = FileSystem.join(scratch, "destination-vault-\(round + 1)")
            _ = try KeyVault.createFileVault(at: destinationPath)
            let received = FileSystem.join(scratch, "received-\(round + 1).state")
            let seconds = try Self.sendOnce(statePath, vaultAt: sourcePath, to: received, vaultAt: destinationPath)
            try FileSystem.removeFile(received)
            if round < 0 { continue }
            transfer.append(Double(length) / seconds / 1e6)
            durable.append(Double(length) / (try Self.durableWrite(length, in: scratch)) / 1e6)
            if !json {
                print(String(format: "  round %d: transfer %.0f MB/s, durable write of the same bytes %.0f MB/s", round + 1, transfer.last!, durable.last!))
            }
        }
        let report = Report(bytes: length, directory: dir, transferMBps: transfer, transferMedianMBps: Self.median(transfer),
                            durableWriteMBps: durable, durableWriteMedianMBps: Self.median(durable),
                            ratio: Self.median(transfer) / Self.median(durable))
        let goal = BenchmarkCommand.Goal(
            name: "container transfer to disk, \(formatBytes(length))", unit: "MB/s", figure: report.transferMedianMBps,
            spread: [transfer.min() ?? 0, transfer.max() ?? 0], reference: report.durableWriteMedianMBps,
            referenceName: "the same bytes written with the receiver's sync pattern, same directory",
            referenceSpread: [durable.min() ?? 0, durable.max() ?? 0], goal: ">= 0.95", higherIsBetter: true,
            note: "median of \(rounds) rounds after one warm-up, into \(dir)")
        if !json {
            print(String(format: "transfer median %.0f MB/s; durable write median %.0f MB/s; ratio %.2f",
                         report.transferMedianMBps, report.durableWriteMedianMBps, report.ratio))
        }
        return (report, goal)
    }

    /// One `guestvault send` to a `guestvault receive`, two processes as two hosts run
    /// them; the time is the sender's own report: from opening the container to the
    /// receiver's DONE (process start-up aside).
    static func sendOnce(_ statePath: String, vaultAt sourcePath: String, to received: String, vaultAt destinationPath: String) throws -> Double {
        let tool = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let recipient = hexString(try KeyVault.open(at: destinationPath).recipientKey().publicKey.rawRepresentation)
        let senderKey = hexString(try KeyVault.open(at: sourcePath).recipientKey().publicKey.rawRepresentation)
        let port = try TPMBenchmarkRun.freePortPair()
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: tool)
        receiver.arguments = ["receive", "--vault", destinationPath, "--listen", "tcp:127.0.0.1:\(port)", "--from", senderKey, received]
        receiver.standardOutput = FileHandle.nullDevice
        receiver.standardError = FileHandle.nullDevice
        try receiver.run()
        defer { if receiver.isRunning { kill(receiver.processIdentifier, SIGKILL) }; Self.waitForExit(receiver) }
        // Wait until it listens (read from /proc/net/tcp: a probe connection would only
        // cost the receiver a handshake that fails).
        var waited = 0
        while !Self.listening(port) && waited < 1000 {
            usleep(5_000)
            waited += 1
        }
        let sender = Process()
        sender.executableURL = URL(fileURLWithPath: tool)
        sender.arguments = ["send", "--vault", sourcePath, statePath, "--to", "tcp:127.0.0.1:\(port)", "--recipient", recipient, "--json"]
        // The report goes to a file: reading a pipe while the child runs costs this
        // process CPU that the two ends need.
        let reportPath = received + ".report.json"
        guard FileManager.default.createFile(atPath: reportPath, contents: nil), let reportFile = FileHandle(forWritingAtPath: reportPath) else {
            throw TPMBenchmarkRun.BenchmarkFailure(message: "cannot create \(reportPath)")
        }
        defer { try? FileSystem.removeFile(reportPath) }
        sender.standardOutput = reportFile
        sender.standardError = FileHandle.nullDevice
        try sender.run()
        Self.waitForExit(sender)
        Self.waitForExit(receiver)
        let data = try Data(contentsOf: URL(fileURLWithPath: reportPath))
        guard sender.terminationStatus == 0, receiver.terminationStatus == 0 else {
            throw TPMBenchmarkRun.BenchmarkFailure(message: "guestvault send exited \(sender.terminationStatus), receive \(receiver.terminationStatus)")
        }
        return try JSONDecoder().decode(ContainerTransfer.Report.self, from: data).seconds
    }

    /// Waits for `process` to end, sleeping (Foundation's `waitUntilExit` polls a run
    /// loop, which costs CPU the measured processes need).
    static func waitForExit(_ process: Process) {
        while process.isRunning { usleep(20_000) }
    }

    /// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp: state 0A).
    static func listening(_ port: UInt16) -> Bool {
        guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return false }
        let needle = String(format: ":%04X 00000000:0000 0A", port)
        return table.contains(needle)
    }

    /// `length` bytes written with the receiver's sync pattern (seconds): what its disk
    /// work costs alone. As ContainerReceiver does: 1 MiB pieces, writeback started every
    /// 8 MiB, every 64 MiB an fdatasync and the durable acknowledgement file (stage, sync,
    /// rename, directory sync), an fsync at the end.
    static func durableWrite(_ length: UInt64, in directory: String) throws -> Double {
        let path = FileSystem.join(directory, "durable-write.bin")
        let ack = FileSystem.join(directory, "durable-write.ack")
        defer { try? FileSystem.removeFile(path); try? FileSystem.removeFile(ack) }
        let file = try OpenFile(creating: path)
        let piece = [UInt8](repeating: 0x5a, count: 1 << 20)
        let writebackEvery: UInt64 = 8 << 20, ackEvery: UInt64 = 64 << 20
        let start = DispatchTime.now().uptimeNanoseconds
        var offset: UInt64 = 0
        while offset < length {
            let count = Int(min(UInt64(piece.count), length - offset))
            try file.write(piece[0..<count], at: Int64(offset))
            offset += UInt64(count)
            if offset % writebackEvery == 0 { file.startWriteback(at: Int64(offset - writebackEvery), count: Int64(writebackEvery)) }
            if offset % ackEvery == 0 {
                try file.syncData()
                try DurableFile.write(Offset64Bytes.of(offset), to: ack)
            }
        }
        try file.sync()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The acknowledgement record's size (an offset and a digest prefix): 16 bytes.
    enum Offset64Bytes {
        static func of(_ offset: UInt64) -> [UInt8] { offset.bigEndianBytes + [UInt8](repeating: 0, count: 8) }
    }

    /// A container with one `vm.runtime` entry of `mebibytes` MiB; returns its length.
    /// The content does not matter to the speed (it is sealed either way): one random
    /// MiB, repeated. The container is closed (its lock released) on return.
    static func makeSource(at path: String, vault: KeyVault, mebibytes: Int) throws -> UInt64 {
        let container = try GuestStateContainer.create(at: path, vm: UUID(), vault: vault)
        let block = try SecureRandom.bytes(count: 1 << 20)
        var remaining = mebibytes << 20
        try container.writeStream("vm.runtime") { buffer in
            let n = min(buffer.count, remaining)
            var filled = 0
            while filled < n {
                let count = min(block.count, n - filled)
                buffer.replaceSubrange(filled..<(filled + count), with: block[0..<count])
                filled += count
            }
            remaining -= n
            return n
        }
        try container.commit()
        try vault.counters.flush()
        return UInt64(container.logEnd)
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}
