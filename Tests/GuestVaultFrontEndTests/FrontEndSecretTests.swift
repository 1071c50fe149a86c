import Foundation
@testable import GuestVaultVM
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultTestSupport
import Testing

/// libvirt's VM secret at every start (docs/LIBVIRT.md): the front end checks that the
/// secret libvirt passes is the one the TPM state was set up with, as swtpm's encrypted
/// state would not open under another, and enrolls a secret a VM did not have.
@Suite("Front ends: libvirt's VM secret", .serialized)
struct FrontEndSecretTests {
    let directory = TemporaryDirectory("gv-frontend-secret")
    var bin: String { directory.file("bin") }

    init() throws {
        try makeVault(directory.file("vault"))
        try installFrontEnds(into: directory.file("bin"), vault: directory.file("vault"))
    }

    /// Runs a front end with `secret` readable on descriptor 3 (a pipe, as libvirt passes it).
    func withSecret(_ secret: String, _ name: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess("/bin/bash", ["-c", #"exec 3< <(printf %s "$GV_TEST_SECRET"); exec "$0" "$@""#, "\(bin)/\(name)"] + arguments,
                       environment: ["GV_TEST_SECRET": secret])
    }

    /// `swtpm socket --daemon` with the secret as libvirt passes it; stops it again when it
    /// started. Returns the parent's result.
    func start(_ state: String, secret: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let socket = directory.file("ctrl-\(UUID().uuidString.prefix(8)).sock")
        let result = try withSecret(secret, "swtpm", ["socket", "--tpm2", "--tpmstate", "dir=\(state),mode=0600", "--ctrl", "type=unixio,path=\(socket),mode=0600",
                                                      "--log", "file=\(directory.file("swtpm.log"))", "--key", "pwdfd=3,mode=aes-256-cbc", "--daemon"])
        if result.status == 0 {
            let stop = try frontEnd(bin, "swtpm_ioctl", ["--unix", socket, "-s"])
            #expect(stop.status == 0, "\(stop.stderr)")
            waitUntil(attempts: 100, interval: 50_000) { !FileManager.default.fileExists(atPath: socket) }
        }
        return result
    }

    func entries(_ state: String) throws -> [String] {
        let container = try GuestStateContainer.open(at: state + "/tpm2-00.guestvault")
        return container.entryNames
    }

    func passphraseSlots(_ state: String) throws -> Int {
        try GuestStateContainer.open(at: state + "/tpm2-00.guestvault").slots.slots.filter { $0.kind == .passphrase }.count
    }

    /// The verifier as docs/LIBVIRT.md defines it (the value made with Python's hmac).
    @Test func theVerifierIsTheDocumentedHMAC() throws {
        let verifier = try FrontEndSecret.verifier(SecretBytes(copying: Array("not a newline-terminated secret".utf8)),
                                                   containerID: Array(0..<16))
        #expect(verifier.map { String(format: "%02x", $0) }.joined() == "dbba7ffe637ac2a305ac43c2e7c0e8d8ea66d37b441f447cf9fc6632ed984894")
    }

    @Test func theSecretSetUpWithIsRequiredAtEveryStart() throws {
        let state = directory.file("a/\(UUID().uuidString.lowercased())/tpm2")
        let setup = try withSecret("right secret", "swtpm_setup", ["--tpm2", "--tpm-state", state, "--createek", "--not-overwrite",
                                                                    "--pwdfile-fd", "3", "--cipher", "aes-256-cbc"])
        #expect(setup.status == 0, "\(setup.stderr)")
        #expect(try entries(state).contains("libvirt.secret"))
        #expect(try passphraseSlots(state) == 1)

        let started = try start(state, secret: "right secret")
        #expect(started.status == 0, "\(started.stderr)")
        let before = FileManager.default.contents(atPath: state + "/tpm2-00.guestvault")
        let wrong = try start(state, secret: "another secret")
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("VM secret libvirt passed is not the one"), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("another secret"))
        #expect(FileManager.default.contents(atPath: state + "/tpm2-00.guestvault") == before, "a refused start changes nothing")
        #expect(onlySealed(state))
    }

    /// A VM set up without a secret that libvirt now starts with one: the secret becomes a
    /// passphrase protector, and from then on it is required.
    @Test func aSecretAddedLaterIsEnrolledThenRequired() throws {
        let state = directory.file("b/\(UUID().uuidString.lowercased())/tpm2")
        #expect(try frontEnd(bin, "swtpm_setup", ["--tpm2", "--tpm-state", state, "--createek", "--not-overwrite"]).status == 0)
        #expect(try passphraseSlots(state) == 0)
        let first = try start(state, secret: "added later")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try passphraseSlots(state) == 1)
        #expect(try entries(state).contains("libvirt.secret"))
        #expect(try start(state, secret: "added later").status == 0)
        #expect(try start(state, secret: "not it").status != 0)
    }

    /// A container made before the check (a passphrase slot, no verifier): the slot itself
    /// decides once (scrypt), then the verifier is recorded.
    @Test func anOlderContainerIsCheckedAgainstItsPassphraseSlot() throws {
        let state = directory.file("c/\(UUID().uuidString.lowercased())/tpm2")
        #expect(try withSecret("old secret", "swtpm_setup", ["--tpm2", "--tpm-state", state, "--createek", "--not-overwrite",
                                                            "--pwdfile-fd", "3"]).status == 0)
        // Take the verifier out, as a container of the previous release has none.
        let vault = try KeyVault.open(at: directory.file("vault"))
        do {
            let container = try GuestStateContainer.open(at: state + "/tpm2-00.guestvault", access: .readWrite)
            try container.unlock(with: UnlockCredentials(vault: vault))
            try container.remove("libvirt.secret")
            try container.commit()
            try container.flush()
        }
        #expect(try !entries(state).contains("libvirt.secret"))
        let wrong = try start(state, secret: "not the old secret")
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("VM secret libvirt passed is not the one"), "\(wrong.stderr)")
        #expect(try !entries(state).contains("libvirt.secret"))
        let right = try start(state, secret: "old secret")
        #expect(right.status == 0, "\(right.stderr)")
        #expect(try entries(state).contains("libvirt.secret"))
        #expect(try start(state, secret: "not the old secret").status != 0)
    }
}
