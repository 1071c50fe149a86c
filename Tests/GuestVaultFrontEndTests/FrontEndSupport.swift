import Foundation
import GuestVaultTestSupport
import Testing

/// The front ends as libvirt finds them: scripts/install-frontends.sh run into `directory`,
/// over `guestvault-vm` (the per-VM executable the script installs by default).
func installFrontEnds(into directory: String, vault: String) throws {
    var root = URL(fileURLWithPath: GuestVaultBinary.path).deletingLastPathComponent()
    while root.path != "/" && !FileManager.default.fileExists(atPath: root.appendingPathComponent("scripts/install-frontends.sh").path) {
        root = root.deletingLastPathComponent()
    }
    let result = try runProcess("/bin/bash", [root.appendingPathComponent("scripts/install-frontends.sh").path,
                                              "--binary", GuestVaultBinary.vmPath, "--vault", vault, directory])
    guard result.status == 0 else { throw LibvirtHarnessError(message: "install-frontends.sh: \(result.stderr)") }
}

/// Two hosts' front ends, each over a new vault of its own: `bin-a` over `vault-a` and
/// `bin-b` over `vault-b` in `directory`.
func installTwoHosts(in directory: TemporaryDirectory) throws -> (a: String, b: String) {
    for host in ["a", "b"] {
        try makeVault(directory.file("vault-\(host)"))
        try installFrontEnds(into: directory.file("bin-\(host)"), vault: directory.file("vault-\(host)"))
    }
    return (directory.file("bin-a"), directory.file("bin-b"))
}

/// A new file vault.
func makeVault(_ path: String) throws {
    let result = try runProcess(GuestVaultBinary.path, ["vault", "init", "--vault", path])
    guard result.status == 0 else { throw LibvirtHarnessError(message: "vault init: \(result.stderr)") }
}

/// Runs a front end by name from `bin`.
func frontEnd(_ bin: String, _ name: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProcess("\(bin)/\(name)", arguments)
}

/// Serves the TPM in `stateDirectory` through the `swtpm` front end in `bin` on loopback
/// TCP, runs `body` with tpm2-tools' environment for it, and stops it with
/// `swtpm_ioctl -s`. `firstCommand` (a tpm2-tools call) is retried until the server
/// answers; its result is handed to `body`. Nothing else may hold the state meanwhile.
func withFrontEndTPM<T>(bin: String, stateDirectory: String, firstCommand: (tool: String, arguments: [String]),
                        _ body: (_ first: (status: Int32, stdout: String, stderr: String), _ tcti: [String: String]) throws -> T) throws -> T {
    let port = UInt16.random(in: 10_000...15_000) * 2
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "\(bin)/swtpm")
    server.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(stateDirectory)", "--server", "type=tcp,port=\(port)",
                        "--ctrl", "type=tcp,port=\(port + 1)", "--flags", "not-need-init,startup-clear"]
    server.standardOutput = FileHandle.nullDevice
    try server.run()
    defer {
        _ = try? runProcess("\(bin)/swtpm_ioctl", ["--tcp", "127.0.0.1:\(port + 1)", "-s"])
        server.waitUntilExit()
    }
    let tcti = ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"]
    var first = (status: Int32(1), stdout: "", stderr: "")
    waitUntil(attempts: 100, interval: 50_000) {
        first = (try? runProcess("/usr/bin/\(firstCommand.tool)", firstCommand.arguments, environment: tcti)) ?? first
        return first.status == 0 || !server.isRunning
    }
    guard first.status == 0 else { throw LibvirtHarnessError(message: "\(firstCommand.tool): \(first.stderr)") }
    return try body(first, tcti)
}

/// The TPM's EK (RSA public area at 0x81010001) and EK certificate (NV 0x01C00002) and a
/// test NV index if there is one, read through the `swtpm` front end and tpm2-tools.
func tpmIdentity(bin: String, stateDirectory: String, nvIndex: String? = nil) throws -> String {
    try withFrontEndTPM(bin: bin, stateDirectory: stateDirectory, firstCommand: ("tpm2_readpublic", ["-c", "0x81010001"])) { ek, tcti in
        let certificate = try runProcess("/usr/bin/tpm2_nvread", ["-C", "o", "0x01c00002"], environment: tcti)
        guard certificate.status == 0 else { throw LibvirtHarnessError(message: "tpm2_nvread: \(certificate.stderr)") }
        var identity = ek.stdout + "\ncertificate: " + Data(certificate.stdout.utf8).base64EncodedString()
        if let nvIndex {
            let value = try runProcess("/usr/bin/tpm2_nvread", ["-C", "o", nvIndex], environment: tcti)
            identity += "\nnv: " + (value.status == 0 ? value.stdout : "none")
        }
        return identity
    }
}

/// Writes a test NV index (owner, 16 bytes) into the TPM in `stateDirectory`.
func writeTestNV(bin: String, stateDirectory: String, index: String, value: String) throws {
    let define = ("tpm2_nvdefine", [index, "-C", "o", "-s", "\(value.utf8.count)", "-a", "ownerread|ownerwrite"])
    try withFrontEndTPM(bin: bin, stateDirectory: stateDirectory, firstCommand: define) { _, tcti in
        let path = NSTemporaryDirectory() + "nv-\(UUID().uuidString)"
        try value.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let write = try runProcess("/usr/bin/tpm2_nvwrite", [index, "-C", "o", "-i", path], environment: tcti)
        guard write.status == 0 else { throw LibvirtHarnessError(message: "tpm2_nvwrite: \(write.stderr)") }
    }
}

/// The names in a state directory, and a check that none of them is swtpm's plaintext.
func stateFiles(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
}

/// True when `directory` holds only the sealed container (and its lock file) and no file
/// in it contains `plaintext` (an NV value written into the TPM).
func onlySealed(_ directory: String, plaintext: String? = nil) -> Bool {
    let files = stateFiles(directory)
    guard files == ["tpm2-00.guestvault", "tpm2-00.guestvault.lock"] else { return false }
    if let plaintext, let bytes = FileManager.default.contents(atPath: directory + "/tpm2-00.guestvault") {
        if bytes.range(of: Data(plaintext.utf8)) != nil { return false }
    }
    return true
}
