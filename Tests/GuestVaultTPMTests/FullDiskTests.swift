import Foundation
import Glibc
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// Issue 13.14: the disk fills up under a running VM. The NV write that cannot be
/// committed fails, the TPM then answers TPM_RC_FAILURE (its memory is ahead of its
/// storage) instead of acting on state that is not durable, the log says why, and the
/// next CMD_INIT (a VM reset) starts it again from the last committed state once there
/// is room. docs/SWTPM-PROTOCOL.md, section 8.4. A real full file system: a small tmpfs.
@Suite(.enabled(if: Peers.tpm2Tools && getuid() == 0 && Run.which("swtpm_ioctl") != nil,
                "needs root (to mount a tmpfs), tpm2-tools and swtpm_ioctl"))
struct FullDiskTests {
    static let index = "0x1500040"

    @Test func anNVWriteOnAFullDiskFailsTheTPMUntilTheNextInit() throws {
        let dir = TemporaryDirectory("serve-full-disk")
        let disk = dir.file("disk")
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: false)
        let mounted = try Run.program("/bin/mount", ["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", disk])
        try #require(mounted.status == 0, "mount: \(mounted.stderr)")
        defer { _ = try? Run.program("/bin/umount", [disk]) }

        let vault = dir.file("vault"), state = "\(disk)/vm.state", log = dir.file("serve.log")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        try #require(created.status == 0, "\(created.stderr)")
        let server = try ServedTPM(vault: vault, state: state, logFile: log)
        func tool(_ name: String, _ arguments: [String], input: Data? = nil) throws -> Run.Output {
            try Run.program(Run.which(name)!, arguments, environment: server.tcti, input: input)
        }
        let defined = try tool("tpm2_nvdefine", [Self.index, "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite"])
        try #require(defined.status == 0, "tpm2_nvdefine: \(defined.stderr)")
        // NV writes straight on the data channel until the disk is full (the container
        // preallocates a MiB, so the first writes still fit).
        let filler = "\(disk)/filler"
        _ = try Run.program("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=4096"])
        let data = try StreamSocket.connect(server.dataAddress)
        try data.setTimeout(seconds: 30)
        var acknowledged: UInt64?
        var failure: UInt32?
        for value in UInt64(1)...20_000 {
            let code = try Self.nvWrite(value, on: data)
            guard code == 0 else { failure = code; break }
            acknowledged = value
        }
        #expect(failure == 0x101, "the NV write that could not be committed got TPM_RC_FAILURE, not \(failure.map { String($0, radix: 16) } ?? "success")")
        try #require(failure != nil, "the disk never filled up")
        #expect(try Self.getRandom(on: data) == 0x101, "the TPM went on after an NV change it could not commit")
        #expect(Self.contents(log).contains("could not be committed"), "\(Self.contents(log).suffix(800))")

        // Room again: the TPM stays failed until the VM resets it.
        try FileManager.default.removeItem(atPath: filler)
        #expect(try Self.getRandom(on: data) == 0x101)
        let initialized = try Run.program(Run.which("swtpm_ioctl")!, ["--tcp", "127.0.0.1:\(server.port + 1)", "-i"])
        #expect(initialized.status == 0, "swtpm_ioctl -i: \(initialized.stderr)")
        #expect(try Self.getRandom(on: data) == 0)
        let read = try tool("tpm2_nvread", [Self.index, "-C", "o", "-s", "8"])
        #expect(read.status == 0, "tpm2_nvread: \(read.stderr)")
        #expect(read.stdout == Data((acknowledged ?? 0).bigEndianBytes), "the NV index holds the last acknowledged write, \(acknowledged ?? 0)")
        #expect(server.terminate() == 0)
    }

    /// TPM2_NV_Write of `value` (8 bytes, owner auth) on a raw data connection; the
    /// response code.
    static func nvWrite(_ value: UInt64, on socket: StreamSocket) throws -> UInt32 {
        var parameters = ByteWriter()
        parameters.sized(value.bigEndianBytes)
        parameters.u16(0)
        let command = TPMCommand(code: TPMConstant.ccNVWrite, handles: [TPMConstant.rhOwner, 0x0150_0040], authorizations: 1,
                                 parameters: parameters.bytes)
        try socket.send(command.bytes)
        return try TPMResponse(try socket.receive()).code
    }

    static func getRandom(on socket: StreamSocket) throws -> UInt32 {
        try socket.send(TPMCommand.getRandom(8).bytes)
        return try TPMResponse(try socket.receive()).code
    }

    static func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
}
