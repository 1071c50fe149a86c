import Foundation
import GuestVaultTestSupport
import Testing

/// swtpm_setup's EK, certificate and PCR bank options, each run through the REAL
/// swtpm_setup 0.7.1 and through GuestVault's front end with the same flags; both TPMs
/// are served (real `swtpm socket`, our `swtpm socket`) and read with tpm2-tools: the
/// same persistent handles, NV indices and their attributes, EK templates (everything
/// but the key value), and allocated PCR banks.
@Suite("swtpm_setup options against the real swtpm_setup", .serialized)
struct SwtpmSetupOptionTests {
    let directory = TemporaryDirectory("gv-setup-options")
    var bin: String { directory.file("bin") }
    var realBin: String { directory.file("real") }
    var vault: String { directory.file("vault") }

    init() throws {
        try makeVault(directory.file("vault"))
        try installFrontEnds(into: directory.file("bin"), vault: directory.file("vault"))
        try FileManager.default.createDirectory(atPath: realBin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: realBin + "/swtpm", withDestinationPath: "/usr/bin/swtpm")
        try FileManager.default.createSymbolicLink(atPath: realBin + "/swtpm_ioctl", withDestinationPath: "/usr/bin/swtpm_ioctl")
    }

    /// Makes a TPM with the real swtpm_setup and with ours, with the same `flags`.
    func setupBoth(_ name: String, _ flags: [String]) throws -> (real: String, ours: String) {
        let real = directory.file("\(name)/real"), ours = directory.file("\(name)/ours")
        try FileManager.default.createDirectory(atPath: real, withIntermediateDirectories: true)
        let made = try runProcess("/usr/bin/swtpm_setup", ["--tpm2", "--tpm-state", real, "--overwrite"] + flags)
        try #require(made.status == 0, "real swtpm_setup: \(made.stdout) \(made.stderr)")
        let setup = try frontEnd(bin, "swtpm_setup", ["--tpm2", "--tpm-state", ours, "--vmid", "\(name):\(UUID().uuidString)",
                                                      "--logfile", directory.file("\(name)/setup.log"), "--not-overwrite"] + flags)
        try #require(setup.status == 0, "our swtpm_setup: \(setup.stderr)")
        #expect(onlySealed(ours), "the state directory holds only the sealed container")
        return (real, ours)
    }

    @Test func eccMakesTheP384EKAsSwtpmSetupDoes() throws {
        let (real, ours) = try setupBoth("ecc", ["--createek", "--create-ek-cert", "--lock-nvram", "--ecc"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.persistentHandles == ["0x81010001", "0x81010016"])
        #expect(guestvault.nvIndices == ["0x1C00002", "0x1C00016"])
        #expect(guestvault.comparable == swtpm.comparable)
        #expect(guestvault.publics["0x81010016"]?.contains("value: sha384") == true)
        #expect(guestvault.publics["0x81010016"]?.contains("value: NIST p384") == true)
        #expect(swtpm.comparable.contains("authorization policy: b26e7d28") && swtpm.comparable.contains("ppwrite|writelocked"),
                "the comparison covers the template and the NV attributes")
        try expectCertificatesMatchKeys(guestvault, [("0x01c00002", "0x81010001"), ("0x01c00016", "0x81010016")])
    }

    @Test func rsaKeysize3072AsSwtpmSetupMakesIt() throws {
        let (real, ours) = try setupBoth("rsa3072", ["--createek", "--create-ek-cert", "--lock-nvram", "--rsa-keysize", "3072"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.persistentHandles == ["0x81010016", "0x8101001C"])
        #expect(guestvault.nvIndices == ["0x1C00016", "0x1C0001C"])
        #expect(guestvault.comparable == swtpm.comparable)
        #expect(guestvault.publics["0x8101001c"]?.contains("bits: 3072") == true)
        try expectCertificatesMatchKeys(guestvault, [("0x01c0001c", "0x8101001c"), ("0x01c00016", "0x81010016")])
    }

    @Test func platformCertificateInItsIndex() throws {
        let (real, ours) = try setupBoth("platform", ["--createek", "--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.nvIndices == ["0x1C00002", "0x1C00016", "0x1C08000"])
        #expect(guestvault.comparable == swtpm.comparable)
        #expect(guestvault.nvPublics["0x1C08000"]?.contains("writelocked") == true)
        try expectCertificatesMatchKeys(guestvault, [("0x01c08000", "0x81010001")])
        let text = try certificateText(guestvault.certificates["0x01c08000"] ?? [])
        #expect(text.contains("2.23.133.8.2"), "extendedKeyUsage tcg-kp-PlatformCertificate")
        #expect(text.contains("2.23.133.5.1.1="), "the platform manufacturer in the subjectAltName")
        #expect(try verify(guestvault.certificates["0x01c08000"] ?? []), "signed by the vault's host CA")
        // The certificates live in the TPM's NV, and that only sealed in the container.
        let container = try #require(FileManager.default.contents(atPath: ours + "/tpm2-00.guestvault"))
        for certificate in guestvault.certificates.values {
            #expect(container.range(of: Data(certificate.prefix(64))) == nil, "no certificate in plaintext in the container")
        }
    }

    /// Without --lock-nvram the certificate indices stay writable, as with swtpm_setup.
    @Test func certificatesUnlockedWithoutLockNVRAM() throws {
        let (real, ours) = try setupBoth("unlocked", ["--createek", "--create-ek-cert", "--create-platform-cert"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.comparable == swtpm.comparable)
        #expect(guestvault.nvPublics.values.allSatisfy { !$0.contains("writelocked") })
    }

    @Test func pcrBanksAtManufactureAndReconfigure() throws {
        let (real, ours) = try setupBoth("banks", ["--createek", "--create-ek-cert", "--lock-nvram", "--pcr-banks", "sha1,sha384"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.activeBanks == ["sha1", "sha384"])
        #expect(guestvault.comparable == swtpm.comparable)

        // libvirt's call on every start with active_pcr_banks set.
        let flags = ["--tpm2", "--tpm-state", "", "--pcr-banks", "sha256,sha512", "--reconfigure"]
        let realRun = try runProcess("/usr/bin/swtpm_setup", flags.map { $0.isEmpty ? real : $0 })
        try #require(realRun.status == 0, "real swtpm_setup --reconfigure: \(realRun.stdout) \(realRun.stderr)")
        let ourRun = try frontEnd(bin, "swtpm_setup", flags.map { $0.isEmpty ? ours : $0 })
        try #require(ourRun.status == 0, "our swtpm_setup --reconfigure: \(ourRun.stderr)")
        #expect(onlySealed(ours))
        let swtpmAfter = try TPMView.read(bin: realBin, state: real)
        let guestvaultAfter = try TPMView.read(bin: bin, state: ours)
        #expect(guestvaultAfter.activeBanks == ["sha256", "sha512"])
        #expect(guestvaultAfter.comparable == swtpmAfter.comparable)
        // The EKs (key values too), certificates and NV stay as they were.
        #expect(guestvaultAfter.publics == guestvault.publics)
        #expect(guestvaultAfter.nvPublics == guestvault.nvPublics)
        #expect(guestvaultAfter.certificates == guestvault.certificates)

        // Again with the same banks: nothing to change, the container stays byte for byte.
        let before = FileManager.default.contents(atPath: ours + "/tpm2-00.guestvault")
        #expect(try frontEnd(bin, "swtpm_setup", flags.map { $0.isEmpty ? ours : $0 }).status == 0)
        #expect(FileManager.default.contents(atPath: ours + "/tpm2-00.guestvault") == before)
    }

    /// `--pcr-banks -` keeps libtpms' own allocation, as with swtpm_setup.
    @Test func pcrBanksDashKeepsLibtpmsAllocation() throws {
        let (real, ours) = try setupBoth("dash", ["--pcr-banks", "-"])
        let swtpm = try TPMView.read(bin: realBin, state: real)
        let guestvault = try TPMView.read(bin: bin, state: ours)
        #expect(guestvault.activeBanks == swtpm.activeBanks)
        #expect(guestvault.comparable == swtpm.comparable)
    }

    @Test func optionsSwtpmSetupRefusesAreRefused() throws {
        let state = directory.file("refused")
        for (flags, word) in [(["--rsa-keysize", "4096"], "4096"), (["--pcr-banks", "md5"], "md5")] {
            let result = try frontEnd(bin, "swtpm_setup", ["--tpm2", "--tpm-state", state, "--createek"] + flags)
            #expect(result.status != 0)
            #expect(result.stderr.contains(word))
            #expect(!FileManager.default.fileExists(atPath: state + "/tpm2-00.guestvault"), "nothing made")
        }
        let caps = try frontEnd(bin, "swtpm_setup", ["--print-capabilities"])
        let real = try runProcess("/usr/bin/swtpm_setup", ["--print-capabilities"])
        for feature in ["tpm2-rsa-keysize-2048", "tpm2-rsa-keysize-3072", "cmdarg-reconfigure-pcr-banks"] {
            #expect(real.stdout.contains(feature) && caps.stdout.contains("\"\(feature)\""))
        }
    }

    // MARK: - Helpers

    /// Each certificate (NV index) holds the public key of its EK (persistent handle).
    func expectCertificatesMatchKeys(_ view: TPMView, _ pairs: [(String, String)]) throws {
        for (index, handle) in pairs {
            let certificate = try #require(view.certificates[index], "certificate \(index)")
            let keyPEM = try #require(view.publicPEMs[handle.lowercased()], "public key of \(handle)")
            let path = directory.file("cert-\(UUID().uuidString).der")
            try Data(certificate).write(to: URL(fileURLWithPath: path))
            let fromCertificate = try runProcess("/usr/bin/openssl", ["x509", "-inform", "der", "-in", path, "-noout", "-pubkey"])
            #expect(fromCertificate.status == 0, "\(fromCertificate.stderr)")
            #expect(fromCertificate.stdout == keyPEM, "certificate \(index) holds the key of \(handle)")
        }
    }

    func certificateText(_ certificate: [UInt8]) throws -> String {
        let path = directory.file("cert-\(UUID().uuidString).der")
        try Data(certificate).write(to: URL(fileURLWithPath: path))
        return try runProcess("/usr/bin/openssl", ["x509", "-inform", "der", "-in", path, "-noout", "-text"]).stdout
    }

    func verify(_ certificate: [UInt8]) throws -> Bool {
        let path = directory.file("cert-\(UUID().uuidString).der")
        try Data(certificate).write(to: URL(fileURLWithPath: path))
        let pem = directory.file("cert-\(UUID().uuidString).pem")
        _ = try runProcess("/usr/bin/openssl", ["x509", "-inform", "der", "-in", path, "-out", pem])
        let result = try runProcess("/usr/bin/openssl", ["verify", "-CAfile", vault + "/ca.pem", pem])
        return result.status == 0
    }
}

/// What tpm2-tools show of a TPM served from a state directory.
struct TPMView {
    var persistentHandles: [String] = []
    var nvIndices: [String] = []
    /// tpm2_readpublic per persistent handle (lower-case hex).
    var publics: [String: String] = [:]
    /// The public key per persistent handle, PEM.
    var publicPEMs: [String: String] = [:]
    /// tpm2_nvreadpublic per NV index (as tpm2_getcap prints it).
    var nvPublics: [String: String] = [:]
    /// The NV contents per index ("0x01c0xxxx").
    var certificates: [String: [UInt8]] = [:]
    var pcrs = ""
    var activeBanks: [String] = []

    /// Everything but what differs between two TPMs made the same way: the key values
    /// (and the names computed from them) and the certificate sizes.
    var comparable: String {
        var text = "persistent: \(persistentHandles)\nnv: \(nvIndices)\npcrs:\n\(pcrs)\n"
        for handle in publics.keys.sorted() {
            let kept = publics[handle, default: ""].split(separator: "\n", omittingEmptySubsequences: false).filter { line in
                !["name:", "qualified name:", "rsa:", "x:", "y:"].contains { line.hasPrefix($0) }
            }
            text += "\(handle):\n" + kept.joined(separator: "\n") + "\n"
        }
        for index in nvPublics.keys.sorted() {
            let kept = nvPublics[index, default: ""].split(separator: "\n").filter { line in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                return !trimmed.hasPrefix("name:") && !trimmed.hasPrefix("size:")
            }
            text += kept.joined(separator: "\n") + "\n"
        }
        return text
    }

    /// Serves `state` with `bin/swtpm socket` and reads it with tpm2-tools; stops the
    /// server with `bin/swtpm_ioctl -s`.
    static func read(bin: String, state: String) throws -> TPMView {
        let port = UInt16.random(in: 8_000...14_000) * 2
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "\(bin)/swtpm")
        server.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(state)", "--server", "type=tcp,port=\(port)",
                            "--ctrl", "type=tcp,port=\(port + 1)", "--flags", "not-need-init,startup-clear"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            _ = try? runProcess("\(bin)/swtpm_ioctl", ["--tcp", "127.0.0.1:\(port + 1)", "-s"])
            server.waitUntilExit()
            try? FileManager.default.removeItem(atPath: state + "/.lock")
        }
        let tcti = ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"]
        func tool(_ name: String, _ arguments: [String]) throws -> String {
            let result = try runProcess("/usr/bin/\(name)", arguments, environment: tcti)
            guard result.status == 0 else { throw LibvirtHarnessError(message: "\(name) \(arguments): \(result.stderr)") }
            return result.stdout
        }
        var handles = (status: Int32(1), stdout: "", stderr: "")
        waitUntil(attempts: 100, interval: 50_000) {
            handles = (try? runProcess("/usr/bin/tpm2_getcap", ["handles-persistent"], environment: tcti)) ?? handles
            return handles.status == 0 || !server.isRunning
        }
        guard handles.status == 0 else { throw LibvirtHarnessError(message: "tpm2_getcap: \(handles.stderr)") }
        var view = TPMView()
        func list(_ text: String) -> [String] {
            text.split(separator: "\n").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "- ")) }.filter { !$0.isEmpty }
        }
        view.persistentHandles = list(handles.stdout)
        view.nvIndices = list(try tool("tpm2_getcap", ["handles-nv-index"]))
        for handle in view.persistentHandles {
            let key = handle.lowercased()
            view.publics[key] = try tool("tpm2_readpublic", ["-c", handle])
            let pem = NSTemporaryDirectory() + "ek-\(UUID().uuidString).pem"
            defer { try? FileManager.default.removeItem(atPath: pem) }
            _ = try tool("tpm2_readpublic", ["-c", handle, "-f", "pem", "-o", pem])
            view.publicPEMs[key] = try String(contentsOfFile: pem, encoding: .utf8)
        }
        for index in view.nvIndices {
            view.nvPublics[index] = try tool("tpm2_nvreadpublic", [index])
            let out = NSTemporaryDirectory() + "nv-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: out) }
            _ = try tool("tpm2_nvread", ["-C", "o", index, "-o", out])
            let hex = String(index.dropFirst(2))
            view.certificates["0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex.lowercased()] =
                [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        }
        view.pcrs = try tool("tpm2_getcap", ["pcrs"])
        view.activeBanks = view.pcrs.split(separator: "\n").compactMap { line -> String? in
            let parts = line.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].hasPrefix("- "), !parts[1].contains("[ ]") else { return nil }
            return String(parts[0].dropFirst(2))
        }
        return view
    }
}
