import Foundation
import GuestVaultTestSupport
import Testing

/// `guestvault-vm`, the per-VM process on its own (docs/PERFORMANCE.md): the Swift runtime
/// inside, `serve` with `guestvault serve`'s options and containers, and a cluster
/// member's VM refused (this executable cannot take the VM's lease). The swtpm front-end
/// and libvirt suites run their front ends on this executable too (installFrontEnds).
@Suite("guestvault-vm, the per-VM executable", .serialized)
struct VMExecutableTests {
    let directory = TemporaryDirectory("gv-vm-executable")
    var vault: String { directory.file("vault") }
    var state: String { directory.file("vm.state") }

    init() throws {
        try makeVault(vault)
        let create = try runProcess(GuestVaultBinary.path, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        guard create.status == 0 else { throw LibvirtHarnessError(message: "create: \(create.stderr)") }
    }

    @Test func itLinksTheSwiftRuntimeInside() throws {
        let ldd = try runProcess("/usr/bin/ldd", [GuestVaultBinary.vmPath])
        #expect(ldd.status == 0, "\(ldd.stderr)")
        for library in ["libswiftCore", "libFoundation", "libswift_Concurrency", "libdispatch"] {
            #expect(!ldd.stdout.contains(library), "guestvault-vm loads \(library) at start: \(ldd.stdout)")
        }
        for library in ["libtpms", "libcrypto"] {
            #expect(ldd.stdout.contains(library), "\(ldd.stdout)")
        }
        // The per-VM modules use FoundationEssentials only: no object of Foundation proper,
        // CoreFoundation or ICU is linked in (an `import Foundation` in any of them, or a
        // Foundation-only API, would bring 50 MB of it back; docs/PERFORMANCE.md).
        let foundation = try runProcess("/bin/sh", ["-c", "nm '\(GuestVaultBinary.vmPath)' | grep -c -e '10Foundation' -e '_CFRuntime' -e 'ucol_open' || true"])
        #expect(foundation.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0",
                "guestvault-vm links Foundation (corelibs), CoreFoundation or ICU: \(foundation.stdout) symbols")
        // Nothing of the cluster client (SwiftNIO and its BoringSSL) is linked in.
        let symbols = try runProcess("/bin/sh", ["-c", "strings -a '\(GuestVaultBinary.vmPath)' | grep -c -e NIOPosix -e AsyncHTTPClient || true"])
        #expect(symbols.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test func usageHelpAndAnUnknownVerb() throws {
        let none = try runProcess(GuestVaultBinary.vmPath, [])
        #expect(none.status == 2 && none.stderr.contains("guestvault-vm serve"), "\(none.stderr)")
        let unknown = try runProcess(GuestVaultBinary.vmPath, ["create", state])
        #expect(unknown.status == 2 && unknown.stderr.contains("unknown verb create"), "\(unknown.stderr)")
        let help = try runProcess(GuestVaultBinary.vmPath, ["--help"])
        #expect(help.status == 0 && help.stdout.contains("swtpm_setup"), "\(help.stdout)")
        let serveHelp = try runProcess(GuestVaultBinary.vmPath, ["serve", "--help"])
        #expect(serveHelp.status == 0 && serveHelp.stdout.contains("--ctrl"), "\(serveHelp.stdout)")
        let badOption = try runProcess(GuestVaultBinary.vmPath, ["serve", "--no-such-option", state])
        #expect(badOption.status == 2, "\(badOption.stderr)")
    }

    /// The lean serve and the CLI's serve take turns on one container: an NV index written
    /// through one is read through the other, and SIGTERM commits.
    @Test func itServesTheContainerTheCLIServes() throws {
        let value = "written by guestvault-vm \(UUID().uuidString.prefix(8))"
        try serving(with: GuestVaultBinary.vmPath) { tcti in
            let define = try runProcess("/usr/bin/tpm2_nvdefine", ["0x01500077", "-C", "o", "-s", "\(value.utf8.count)", "-a", "ownerread|ownerwrite"], environment: tcti)
            #expect(define.status == 0, "\(define.stderr)")
            let input = directory.file("nv-input")
            try value.write(toFile: input, atomically: true, encoding: .utf8)
            let write = try runProcess("/usr/bin/tpm2_nvwrite", ["0x01500077", "-C", "o", "-i", input], environment: tcti)
            #expect(write.status == 0, "\(write.stderr)")
        }
        try serving(with: GuestVaultBinary.path) { tcti in
            let read = try runProcess("/usr/bin/tpm2_nvread", ["0x01500077", "-C", "o"], environment: tcti)
            #expect(read.status == 0 && read.stdout == value, "\(read.stdout) \(read.stderr)")
        }
        try serving(with: GuestVaultBinary.vmPath) { tcti in
            let read = try runProcess("/usr/bin/tpm2_nvread", ["0x01500077", "-C", "o"], environment: tcti)
            #expect(read.status == 0 && read.stdout == value, "\(read.stdout) \(read.stderr)")
        }
        let inspect = try runProcess(GuestVaultBinary.path, ["inspect", state, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: state))
        #expect(bytes.range(of: Data(value.utf8)) == nil, "the NV value is sealed, not in the file")
    }

    /// An idle server waits in poll(2) without a timeout (a stop request wakes it through
    /// a descriptor): on a host with many VMs, idle vTPMs cost no CPU. Counted as the
    /// voluntary context switches of all its threads over a second (an idle loop with a
    /// timeout, or a thread polling for signals, makes tens).
    @Test(arguments: ["guestvault-vm", "guestvault"])
    func anIdleServerDoesNotWakeUp(_ name: String) throws {
        let executable = name == "guestvault-vm" ? GuestVaultBinary.vmPath : GuestVaultBinary.path
        try serving(with: executable, idle: { pid in
            usleep(300_000)
            let before = try Self.voluntarySwitches(pid)
            usleep(1_000_000)
            let after = try Self.voluntarySwitches(pid)
            #expect(after - before <= 1, "\(name) serve woke \(after - before) times in a second while idle")
        }) { tcti in
            // Some work first: a command served, its connection closed.
            let random = try runProcess("/usr/bin/tpm2_getrandom", ["--hex", "8"], environment: tcti)
            #expect(random.status == 0, "\(random.stderr)")
        }
    }

    /// The voluntary context switches of every thread of `pid`.
    static func voluntarySwitches(_ pid: Int32) throws -> Int {
        var total = 0
        for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
            for line in status.split(separator: "\n") where line.hasPrefix("voluntary_ctxt_switches:") {
                total += Int(line.split(separator: "\t").last.map(String.init) ?? "") ?? 0
            }
        }
        return total
    }

    /// A vault in a cluster: serving without the VM's lease could let two hosts run the
    /// same VM, so guestvault-vm refuses and names `guestvault serve`; nothing changes.
    @Test func aClusterMembersVMIsRefused() throws {
        let membership = vault + "/cluster.json"
        try Data("{}".utf8).write(to: URL(fileURLWithPath: membership))
        defer { try? FileManager.default.removeItem(atPath: membership) }
        let before = try Data(contentsOf: URL(fileURLWithPath: state))
        let port = freeLoopbackPortPair()
        let refused = try runChild(GuestVaultBinary.vmPath, ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)",
                                                             "--ctrl", "tcp:127.0.0.1:\(port + 1)"], timeout: 60)
        #expect(refused.status == 14, "unsupported: \(refused.status) \(refused.errors)")
        #expect(refused.errors.contains("cluster") && refused.errors.contains("guestvault serve"), "\(refused.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: state)) == before)
    }

    /// Serves the container with `executable serve` on loopback TCP, runs `body` with
    /// tpm2-tools' environment, then stops the server with SIGTERM (it must exit 0).
    func serving(with executable: String, idle: ((Int32) throws -> Void)? = nil, _ body: ([String: String]) throws -> Void) throws {
        let port = freeLoopbackPortPair()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: executable)
        server.arguments = ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
                            "--flags", "not-need-init,startup-clear"]
        let errors = Pipe()
        server.standardError = errors
        try server.run()
        defer {
            if server.isRunning { server.terminate() }
            server.waitUntilExit()
        }
        #expect(waitUntilAccepting(port: port, while: server), "\(executable) serve did not answer")
        let tcti = ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"]
        try body(tcti)
        try idle?(server.processIdentifier)
        server.terminate()
        server.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(server.terminationReason == .exit && server.terminationStatus == 0, "\(executable): \(stderr)")
    }
}
