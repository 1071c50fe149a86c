import Foundation
import Synchronization
import Testing

/// `guestvault serve` killed (SIGKILL) at a random moment during a burst of tpm2-tools
/// NV writes, then started again from the same container: the NV index must hold the
/// last write that tpm2_nvwrite reported done, or the one in flight when the server died,
/// never an older one. The server commits every NV change before it answers, so an
/// acknowledged write must survive; a restart that the vault's rollback counter refused
/// would fail to come up.
@Suite(.enabled(if: Peers.tpm2Tools, "tpm2-tools is not installed (scripts/deps.sh --tests installs it): the serve crash test did not run"))
struct ServeCrashTests {
    static var kills: Int {
        Int(ProcessInfo.processInfo.environment["GUESTVAULT_SERVE_KILLS"] ?? "") ?? 5
    }

    static let index = "0x1500030"

    func nvWrite(_ server: ServedTPM, _ value: UInt64) throws -> Run.Output {
        try Run.program(Run.which("tpm2_nvwrite")!, [Self.index, "-C", "o", "-i", "-"], environment: server.tcti,
                        input: Data(bigEndianBytes(value)), timeout: 30)
    }

    func nvRead(_ server: ServedTPM) throws -> UInt64? {
        let output = try Run.program(Run.which("tpm2_nvread")!, [Self.index, "-C", "o", "-s", "8"], environment: server.tcti, timeout: 30)
        #expect(output.status == 0, "tpm2_nvread: \(output.stderr)")
        guard output.stdout.count == 8 else { return nil }
        return output.stdout.reduce(0) { $0 << 8 | UInt64($1) }
    }

    @Test func sigkillDuringAnNVWriteBurstKeepsEveryAcknowledgedWrite() throws {
        let dir = TemporaryDirectory("serve-crash")
        let vault = dir.file("vault"), state = dir.file("vm.state")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        try #require(created.status == 0, "\(created.stderr)")

        var server = try ServedTPM(vault: vault, state: state)
        let defined = try Run.program(Run.which("tpm2_nvdefine")!, [Self.index, "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite"],
                                      environment: server.tcti)
        try #require(defined.status == 0, "tpm2_nvdefine: \(defined.stderr)")
        var acknowledged: UInt64 = 1
        let first = try nvWrite(server, acknowledged)
        try #require(first.status == 0, "tpm2_nvwrite: \(first.stderr)")

        var generator = SystemRandomNumberGenerator()
        var writes = 0, inFlightKept = 0, lastKept = 0, lost = 0
        for round in 0..<Self.kills {
            // The killer: a random moment within the burst (a write takes tens of ms).
            let killed = KillFlag()
            let delay = UInt32.random(in: 20_000...1_500_000, using: &generator)
            let pid = server.process.processIdentifier
            let killer = Thread { [delay] in
                usleep(delay)
                killed.value.store(true, ordering: .sequentiallyConsistent)
                kill(pid, SIGKILL)
            }
            killer.start()

            var inFlight: UInt64?
            var value = acknowledged
            while true {
                value += 1
                let result = try nvWrite(server, value)
                if result.status == 0 {
                    acknowledged = value
                    writes += 1
                    continue
                }
                let wasKilled = killed.value.load(ordering: .sequentiallyConsistent)
                #expect(wasKilled,
                        "round \(round): tpm2_nvwrite \(value) failed while the server was running: \(result.stderr)")
                inFlight = value
                break
            }
            server.process.waitUntilExit()
            #expect(server.process.terminationReason == .uncaughtSignal && server.process.terminationStatus == SIGKILL,
                    "round \(round): the server ended by itself (status \(server.process.terminationStatus))")
            while !killed.value.load(ordering: .sequentiallyConsistent) { usleep(1_000) }

            // Same container, new process (it sends TPM2_Startup(CLEAR) itself).
            server = try ServedTPM(vault: vault, state: state)
            let read = try #require(try nvRead(server), "round \(round): NV index unreadable after the restart")
            #expect(read == acknowledged || read == inFlight,
                    "round \(round): NV holds \(read); last acknowledged write \(acknowledged), in flight \(inFlight.map(String.init) ?? "none")")
            if read == inFlight, let inFlight {
                inFlightKept += 1
                acknowledged = inFlight
            } else if read == acknowledged {
                // The failed write had not been committed, or was never sent.
                lastKept += 1
            } else {
                lost += 1
            }
        }
        let stopped = server.terminate()
        #expect(stopped == 0, "SIGTERM after the last round")
        #expect(lost == 0)
        print("serve crash: \(Self.kills) kills, \(writes) acknowledged NV writes, \(inFlightKept) restarts found the write in flight, \(lastKept) the last acknowledged one, \(lost) an older value")
    }
}

/// Set by the killer thread just before it sends SIGKILL.
private final class KillFlag: Sendable {
    let value = Atomic<Bool>(false)
}

private func bigEndianBytes(_ value: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
}
