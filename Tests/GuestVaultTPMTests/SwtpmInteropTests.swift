import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultCore
import Testing

/// The real peer: swtpm 0.7.1, swtpm_setup and tpm2-tools from Debian (scripts/deps.sh
/// --tests installs them). For plain state, `--keyfile` AES-256-CBC and AES-128-CBC, and
/// `--pwdfile`: make a state with EKs, write an NV index and extend a PCR through swtpm,
/// store its volatile state and stop it, import the directory with `guestvault
/// import-swtpm`, export it with `guestvault export-swtpm`, start swtpm on the export
/// and read the same NV data, PCR and EK public keys back.
///
/// Only loopback addresses; every wait is bounded; every swtpm started is stopped, on
/// failure too (``SwtpmPeer``'s deinit kills it).
@Suite(.serialized) struct SwtpmInteropTests {
    enum Protection: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case plain
        case keyfileAES256 = "keyfile aes-256-cbc"
        case keyfileAES128 = "keyfile aes-128-cbc"
        case pwdfile = "pwdfile"
        var testDescription: String { rawValue }
    }

    static let nvIndex = "0x1500016"
    static let vm = "0b6a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"

    /// A test workspace: a temporary directory, a fresh file vault, key files.
    final class Workspace: @unchecked Sendable {
        let dir = TemporaryDirectory("swtpm-interop")
        var vault: String { dir.file("vault") }

        init() throws {
            try SwtpmTools.requirePeers()
            try SwtpmTools.guestvault(["vault", "init", "--vault", vault]).check("vault init")
        }

        /// Writes a key file for `protection`; returns (swtpm_setup arguments, swtpm
        /// --key value, guestvault key arguments).
        func keyArguments(_ protection: Protection) throws -> (setup: [String], swtpm: [String], guestvault: [String]) {
            switch protection {
            case .plain:
                return ([], [], [])
            case .keyfileAES256, .keyfileAES128:
                let count = protection == .keyfileAES256 ? 32 : 16
                let mode = protection == .keyfileAES256 ? "aes-256-cbc" : "aes-128-cbc"
                let path = dir.file("state-key.hex")
                try writePrivate(path, Array((try SecureRandom.bytes(count: count)).map { String(format: "%02x", $0) }.joined().utf8) + [0x0a])
                return (["--keyfile", path, "--cipher", mode], ["--key", "file=\(path),mode=\(mode)"], ["--key", "\(path),mode=\(mode)"])
            case .pwdfile:
                let path = dir.file("state-passphrase")
                try writePrivate(path, Array("a passphrase for swtpm \(UUID().uuidString)\n".utf8))
                return (["--pwdfile", path], ["--key", "pwdfile=\(path)"], ["--pwdfile", path])
            }
        }

        func writePrivate(_ path: String, _ bytes: [UInt8]) throws {
            try FileSystem.writeAtomically(bytes, to: path, mode: 0o600)
        }
    }

    /// What the TPM holds, as read through tpm2-tools.
    struct Observed: Equatable {
        var nv: Data
        var pcr16: String
        var ekRSA: Data
        var ekECC: Data?
    }

    static func observe(_ tcti: [String: String], workspace: Workspace, tag: String) throws -> Observed {
        let nvOut = workspace.dir.file("nv-\(tag).bin")
        try SwtpmTools.run("tpm2_nvread", [nvIndex, "-C", "o", "-s", "32", "-o", nvOut], environment: tcti).check("tpm2_nvread")
        let pcr = try SwtpmTools.run("tpm2_pcrread", ["sha256:16"], environment: tcti).check("tpm2_pcrread")
        let rsaOut = workspace.dir.file("ek-rsa-\(tag).pub")
        try SwtpmTools.run("tpm2_readpublic", ["-c", "0x81010001", "-o", rsaOut], environment: tcti).check("tpm2_readpublic RSA EK")
        let eccOut = workspace.dir.file("ek-ecc-\(tag).pub")
        let ecc = try SwtpmTools.run("tpm2_readpublic", ["-c", "0x81010016", "-o", eccOut], environment: tcti)
        return Observed(nv: try Data(contentsOf: URL(fileURLWithPath: nvOut)), pcr16: pcr.text,
                        ekRSA: try Data(contentsOf: URL(fileURLWithPath: rsaOut)),
                        ekECC: ecc.status == 0 ? try Data(contentsOf: URL(fileURLWithPath: eccOut)) : nil)
    }

    // MARK: The round trip

    @Test(arguments: Protection.allCases)
    func stateSurvivesImportAndExport(_ protection: Protection) throws {
        let workspace = try Workspace()
        let keys = try workspace.keyArguments(protection)
        let original = workspace.dir.file("swtpm-original")
        try FileSystem.createDirectory(original)
        try SwtpmTools.run("swtpm_setup", ["--tpm2", "--tpm-state", original, "--createek", "--overwrite"] + keys.setup, timeout: 120)
            .check("swtpm_setup")

        // Write NV data and extend a PCR through swtpm, store the volatile state, stop it.
        let nvData = try SecureRandom.bytes(count: 32)
        let nvFile = workspace.dir.file("nv-data.bin")
        try workspace.writePrivate(nvFile, nvData)
        let before: Observed
        do {
            let swtpm = try SwtpmPeer(stateDirectory: original, keyArguments: keys.swtpm)
            try SwtpmTools.run("tpm2_nvdefine", [Self.nvIndex, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite"], environment: swtpm.tcti)
                .check("tpm2_nvdefine")
            try SwtpmTools.run("tpm2_nvwrite", [Self.nvIndex, "-C", "o", "-i", nvFile], environment: swtpm.tcti).check("tpm2_nvwrite")
            try SwtpmTools.run("tpm2_pcrextend", ["16:sha256=" + String(repeating: "ab", count: 32)], environment: swtpm.tcti).check("tpm2_pcrextend")
            before = try Self.observe(swtpm.tcti, workspace: workspace, tag: "before")
            try swtpm.storeVolatileState()
            try swtpm.stop()
        }
        #expect(before.nv == Data(nvData))
        #expect(before.ekECC != nil, "swtpm_setup --createek persists an ECC EK at 0x81010016 too")
        #expect(FileManager.default.fileExists(atPath: "\(original)/tpm2-00.volatilestate"))

        // Import into a new container.
        let state = workspace.dir.file("vm.state")
        let imported = try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm] + keys.guestvault +
                                            [original, state, "--json"]).check("import-swtpm")
        let importReport = try JSONSerialization.jsonObject(with: imported.stdout) as? [String: Any]
        let importedFiles = (importReport?["files"] as? [[String: Any]])?.compactMap { $0["entry"] as? String } ?? []
        #expect(Set(importedFiles) == ["tpm.permanent", "tpm.volatile"])
        let expectedEncryption: String? = switch protection {
        case .plain: nil
        case .keyfileAES256: "aes-256-cbc"
        case .keyfileAES128, .pwdfile: "aes-128-cbc"
        }
        for file in importReport?["files"] as? [[String: Any]] ?? [] {
            #expect(file["encryption"] as? String == expectedEncryption)
        }
        let listed = try SwtpmTools.guestvault(["list", "--vault", workspace.vault, state]).check("list")
        #expect(listed.text.contains("tpm.permanent") && listed.text.contains("tpm.volatile"))

        // Export to a new directory with the same kind of key, and start swtpm on it.
        let exported = workspace.dir.file("swtpm-exported")
        try SwtpmTools.guestvault(["export-swtpm", "--vault", workspace.vault, state] + keys.guestvault + [exported, "--json"])
            .check("export-swtpm")
        #expect(mode(of: exported) == 0o700)
        for name in ["tpm2-00.permall", "tpm2-00.volatilestate"] {
            #expect(mode(of: "\(exported)/\(name)") == 0o600, "\(name)")
        }
        let exportedPermall = try FileSystem.readFile("\(exported)/tpm2-00.permall", limit: 1 << 20)
        #expect(exportedPermall[5] == (protection == .plain ? 0 : protection == .keyfileAES256 ? 0x09 : 0x01))

        let after: Observed
        do {
            let swtpm = try SwtpmPeer(stateDirectory: exported, keyArguments: keys.swtpm)
            after = try Self.observe(swtpm.tcti, workspace: workspace, tag: "after")
            try swtpm.stop()
        }
        #expect(after == before, "the exported state reads differently through swtpm")

        // A second export over the first is refused without --force, and allowed with it.
        let again = try SwtpmTools.guestvault(["export-swtpm", "--vault", workspace.vault, state] + keys.guestvault + [exported])
        #expect(again.status != 0 && again.stderr.contains("not empty") && again.stderr.contains("--force"))
        try SwtpmTools.guestvault(["export-swtpm", "--vault", workspace.vault, state] + keys.guestvault + ["--force", exported])
            .check("export-swtpm --force")

        if SwtpmServeStep.available {
            try SwtpmServeStep.check(vault: workspace.vault, state: state, expected: before, workspace: workspace)
        }
    }

    /// swtpm's other passphrase KDF (which swtpm_setup never picks): an export with
    /// kdf=sha512 and a 256-bit key starts swtpm with the same option.
    @Test func sha512PassphraseExportStartsSwtpm() throws {
        let workspace = try Workspace()
        let original = workspace.dir.file("swtpm-original")
        try FileSystem.createDirectory(original)
        try SwtpmTools.run("swtpm_setup", ["--tpm2", "--tpm-state", original, "--createek", "--overwrite"], timeout: 120).check("swtpm_setup")
        let state = workspace.dir.file("vm.state")
        try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm, original, state]).check("import-swtpm")
        let pass = workspace.dir.file("pass")
        try workspace.writePrivate(pass, Array("sha512 kdf passphrase\n".utf8))
        let exported = workspace.dir.file("swtpm-sha512")
        try SwtpmTools.guestvault(["export-swtpm", "--vault", workspace.vault, state, "--pwdfile", "\(pass),kdf=sha512,mode=aes-256-cbc", exported])
            .check("export-swtpm")
        let swtpm = try SwtpmPeer(stateDirectory: exported, keyArguments: ["--key", "pwdfile=\(pass),kdf=sha512,mode=aes-256-cbc"])
        let ek = try SwtpmTools.run("tpm2_readpublic", ["-c", "0x81010001"], environment: swtpm.tcti).check("tpm2_readpublic")
        #expect(ek.text.contains("rsa"))
        try swtpm.stop()
        // And it imports back with the same option.
        try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm,
                              "--pwdfile", "\(pass),kdf=sha512,mode=aes-256-cbc", exported, workspace.dir.file("again.state")])
            .check("import-swtpm sha512")
    }

    /// swtpm 0.7 still starts from a header-less plain file (what swtpm before 0.2
    /// wrote); so does an import of one.
    @Test func headerlessPlainFileImports() throws {
        let workspace = try Workspace()
        let original = workspace.dir.file("swtpm-original")
        try FileSystem.createDirectory(original)
        try SwtpmTools.run("swtpm_setup", ["--tpm2", "--tpm-state", original, "--createek", "--overwrite"], timeout: 120).check("swtpm_setup")
        let permall = "\(original)/tpm2-00.permall"
        let headed = try FileSystem.readFile(permall, limit: 1 << 20)
        #expect(headed[0] == 2 && headed[10] == 0 && headed[11] == 1)
        try FileSystem.writeAtomically(Array(headed[16...]), to: permall, mode: 0o600)
        let ek: Data
        do {
            let swtpm = try SwtpmPeer(stateDirectory: original, keyArguments: [])
            ek = try SwtpmTools.run("tpm2_readpublic", ["-c", "0x81010001"], environment: swtpm.tcti).check("tpm2_readpublic").stdout
            try swtpm.stop()
        }
        // swtpm rewrote it with a header on start-up; put the header-less form back.
        try FileSystem.writeAtomically(Array(headed[16...]), to: permall, mode: 0o600)
        let state = workspace.dir.file("vm.state")
        let imported = try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm, original, state, "--json"])
            .check("import-swtpm")
        #expect(imported.text.contains("\"layout\" : \"headerless\""))
        let exported = workspace.dir.file("swtpm-exported")
        try SwtpmTools.guestvault(["export-swtpm", "--vault", workspace.vault, state, exported]).check("export-swtpm")
        let swtpm = try SwtpmPeer(stateDirectory: exported, keyArguments: [])
        let again = try SwtpmTools.run("tpm2_readpublic", ["-c", "0x81010001"], environment: swtpm.tcti).check("tpm2_readpublic").stdout
        try swtpm.stop()
        #expect(again == ek)
    }

    // MARK: Refusals

    /// A changed byte and a cut-short tpm2-00.permall are refused with the file and the
    /// offset named, and no container is left behind.
    @Test func corruptedAndTruncatedPermallAreRefused() throws {
        let workspace = try Workspace()
        for protection in [Protection.keyfileAES256, .plain] {
            let keys = try workspace.keyArguments(protection)
            let original = workspace.dir.file("swtpm-\(protection == .plain ? "plain" : "encrypted")")
            try FileSystem.createDirectory(original)
            try SwtpmTools.run("swtpm_setup", ["--tpm2", "--tpm-state", original, "--createek", "--overwrite"] + keys.setup, timeout: 120)
                .check("swtpm_setup")
            let permall = "\(original)/tpm2-00.permall"
            let good = try FileSystem.readFile(permall, limit: 1 << 20)

            // Encrypted: a ciphertext byte (the HMAC catches it). Plain: the data
            // record's length (plain files have no MAC; the envelope still must add up).
            var changed = good
            let offset = protection == .plain ? 15 : 100
            changed[offset] ^= 0x20
            var cases: [(String, [UInt8], String)] = [
                ("changed", changed, protection == .plain ? "at byte " : "at byte \(good.count - 38 - 32): the HMAC does not match"),
                ("truncated", Array(good.prefix(1000)), "at byte 1000: the header says the file is \(good.count) bytes"),
            ]
            if protection == .plain { cases.append(("cut inside the header", Array(good.prefix(7)), "at byte 7")) }
            for (what, bytes, expected) in cases {
                try FileSystem.writeAtomically(bytes, to: permall, mode: 0o600)
                let state = workspace.dir.file("refused.state")
                let result = try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm] + keys.guestvault + [original, state])
                #expect(result.status != 0, "\(protection) \(what) was imported")
                #expect(result.stderr.contains("\(permall): \(expected)"), "\(protection) \(what): \(result.stderr)")
                #expect(!FileManager.default.fileExists(atPath: state), "\(protection) \(what) left a container")
                #expect(!FileManager.default.fileExists(atPath: state + ".lock"), "\(protection) \(what) left a lock file")
            }
            try FileSystem.writeAtomically(good, to: permall, mode: 0o600)
        }
    }

    /// The wrong key, a missing key, and a running swtpm are refused before a container
    /// appears.
    @Test func wrongKeyMissingKeyAndRunningSwtpmAreRefused() throws {
        let workspace = try Workspace()
        let keys = try workspace.keyArguments(.keyfileAES256)
        let original = workspace.dir.file("swtpm-original")
        try FileSystem.createDirectory(original)
        try SwtpmTools.run("swtpm_setup", ["--tpm2", "--tpm-state", original, "--createek", "--overwrite"] + keys.setup, timeout: 120)
            .check("swtpm_setup")
        let state = workspace.dir.file("refused.state")
        let other = workspace.dir.file("other.hex")
        try workspace.writePrivate(other, Array(String(repeating: "5a", count: 32).utf8))

        let cases: [([String], String)] = [
            ([], "encrypted (flag 0x01) with a 256-bit key"),
            (["--key", "\(other),mode=aes-256-cbc"], "the HMAC does not match"),
            (["--key", other], "mode=aes-128-cbc needs 32"),
        ]
        for (arguments, expected) in cases {
            let result = try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm] + arguments + [original, state])
            #expect(result.status != 0 && result.stderr.contains(expected), "\(arguments): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: state))
        }
        let swtpm = try SwtpmPeer(stateDirectory: original, keyArguments: keys.swtpm)
        let running = try SwtpmTools.guestvault(["import-swtpm", "--vault", workspace.vault, "--vm", Self.vm] + keys.guestvault + [original, state])
        #expect(running.status != 0 && running.stderr.contains("swtpm is running"), "\(running.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state))
        try swtpm.stop()
    }
}

/// `SwtpmInterop` through its API, without swtpm: directories built with
/// `SwtpmStateFile.encode`, a validation closure that checks the blobs are non-empty,
/// the container's entries, the export directory's rules and swtpm's lock.
@Suite struct SwtpmInteropAPITests {
    let dir = TemporaryDirectory("swtpm-api")
    let vault: KeyVault
    let vm = UUID()
    let permanent: [UInt8] = [0x00, 0x03, 0xab, 0x36, 0x47, 0x23] + Array(repeating: 0x5a, count: 1200)
    let volatile: [UInt8] = [0x00, 0x04, 0x45, 0x63, 0x78, 0x89] + Array(repeating: 0xa5, count: 900)

    init() throws {
        vault = try KeyVault.createFileVault(at: dir.file("vault"), scrypt: .testing)
    }

    static func nonEmpty(_ permanent: [UInt8], _ volatile: [UInt8]?, _ savestate: [UInt8]?) throws {
        struct Empty: Error {}
        guard !permanent.isEmpty, volatile?.isEmpty != true, savestate?.isEmpty != true else { throw Empty() }
    }

    func makeDirectory(_ name: String, key: SwtpmKey?, volatile withVolatile: Bool = true) throws -> String {
        let path = dir.file(name)
        try FileSystem.createDirectory(path)
        try FileSystem.writeAtomically(SwtpmStateFile.encode(permanent, key: key), to: "\(path)/tpm2-00.permall")
        if withVolatile {
            try FileSystem.writeAtomically(SwtpmStateFile.encode(volatile, key: key), to: "\(path)/tpm2-00.volatilestate")
        }
        return path
    }

    @Test func importWritesTheEntriesAndExportReadsThemBack() throws {
        let key = try SwtpmKey(secret: SecretBytes(randomCount: 32), mode: .aes256CBC)
        let source = try makeDirectory("source", key: key)
        let container = try GuestStateContainer.create(at: dir.file("vm.state"), vm: vm, vault: vault)
        // An entry the directory has no file for is removed by the import.
        try container.write(EntryName.tpmSaveState, [1, 2, 3])
        _ = try container.commit()
        let report = try SwtpmInterop.importState(from: source, key: key, into: container, validate: Self.nonEmpty)
        #expect(try container.read(EntryName.tpmPermanent) == permanent)
        #expect(try container.read(EntryName.tpmVolatile) == volatile)
        #expect(!container.entryNames.contains(EntryName.tpmSaveState))
        #expect(report.removedEntries == [EntryName.tpmSaveState])
        #expect(report.files.map(\.entry) == [EntryName.tpmPermanent, EntryName.tpmVolatile])
        #expect(report.files.allSatisfy { $0.encryption == "aes-256-cbc" && $0.layout == "v2" })
        #expect(report.generation == container.generation)

        // Export plain, then with a 128-bit key over it (--force).
        let target = dir.file("exported")
        let plain = try SwtpmInterop.exportState(from: container, to: target, key: nil)
        #expect(plain.createdDirectory && plain.files.count == 2)
        #expect(mode(of: target) == 0o700)
        for name in ["tpm2-00.permall", "tpm2-00.volatilestate"] { #expect(mode(of: "\(target)/\(name)") == 0o600) }
        #expect(try SwtpmStateFile.decode(FileSystem.readFile("\(target)/tpm2-00.permall", limit: 1 << 20), file: "p", key: nil).payload == permanent)
        do {
            _ = try SwtpmInterop.exportState(from: container, to: target, key: nil)
            Issue.record("an export over a non-empty directory was allowed without overwrite")
        } catch let error as SwtpmInteropError {
            #expect(error.code == .notEmpty)
        }
        let key128 = try SwtpmKey(secret: SecretBytes(randomCount: 16), mode: .aes128CBC)
        let again = try SwtpmInterop.exportState(from: container, to: target, key: key128, overwrite: true)
        #expect(!again.createdDirectory)
        let volatileFile = try FileSystem.readFile("\(target)/tpm2-00.volatilestate", limit: 1 << 20)
        #expect(try SwtpmStateFile.decode(volatileFile, file: "v", key: key128).payload == volatile)

        // Without a volatile entry, --force removes the stale file.
        try container.remove(EntryName.tpmVolatile)
        _ = try container.commit()
        let third = try SwtpmInterop.exportState(from: container, to: target, key: nil, overwrite: true)
        #expect(third.removedFiles == ["tpm2-00.volatilestate"])
        #expect(!FileSystem.exists("\(target)/tpm2-00.volatilestate"))
    }

    @Test func refusalsLeaveTheContainerAsItWas() throws {
        let source = try makeDirectory("source", key: nil, volatile: false)
        let container = try GuestStateContainer.create(at: dir.file("vm.state"), vm: vm, vault: vault)
        let generation = container.generation
        struct No: Error {}
        func expectInterop(_ code: SwtpmInteropError.Code, _ body: () throws -> Void) {
            do { try body(); Issue.record("expected \(code)") } catch let error as SwtpmInteropError {
                #expect(error.code == code, "\(error)")
            } catch { Issue.record("expected SwtpmInteropError \(code), got \(error)") }
        }
        expectInterop(.validationFailed) {
            _ = try SwtpmInterop.importState(from: source, key: nil, into: container) { _, _, _ in throw No() }
        }
        expectInterop(.notAStateDirectory) {
            _ = try SwtpmInterop.importState(from: dir.file("missing"), key: nil, into: container, validate: Self.nonEmpty)
        }
        let old = dir.file("tpm12")
        try FileSystem.createDirectory(old)
        try FileSystem.writeAtomically([1], to: "\(old)/tpm-00.permall")
        expectInterop(.notAStateDirectory) { _ = try SwtpmInterop.importState(from: old, key: nil, into: container, validate: Self.nonEmpty) }
        expectInterop(.missingEntry) { _ = try SwtpmInterop.exportState(from: container, to: dir.file("out"), key: nil) }
        #expect(!FileSystem.exists(dir.file("out")))

        // swtpm's lock, held here through another open file description.
        let lock = try OpenFile(creating: "\(source)/.lock")
        #expect(try lock.tryLock(exclusive: true))
        expectInterop(.inUse) { _ = try SwtpmInterop.importState(from: source, key: nil, into: container, validate: Self.nonEmpty) }
        withExtendedLifetime(lock) {}
        #expect(container.generation == generation)

        try container.write(EntryName.tpmPermanent, permanent)
        _ = try container.commit()
        let target = dir.file("locked")
        try FileSystem.createDirectory(target)
        let targetLock = try OpenFile(creating: "\(target)/.lock")
        #expect(try targetLock.tryLock(exclusive: true))
        expectInterop(.inUse) { _ = try SwtpmInterop.exportState(from: container, to: target, key: nil, overwrite: true) }
        withExtendedLifetime(targetLock) {}
        #expect(!FileSystem.exists("\(target)/tpm2-00.permall"))
    }
}

// MARK: - Running the peers

/// Runs swtpm-tools, tpm2-tools and `guestvault`, each with a deadline.
enum SwtpmTools {
    struct Output {
        let command: String
        let status: Int32
        let stdout: Data
        let stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }

        @discardableResult
        func check(_ what: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> Output {
            guard status == 0 else {
                throw Failure(description: "\(what) failed (exit \(status)): \(command)\n\(stderr)\(text)")
            }
            return self
        }
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    static func path(_ name: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"].map { "\($0)/\(name)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func requirePeers() throws {
        let missing = ["swtpm", "swtpm_setup", "swtpm_ioctl", "tpm2_nvdefine", "tpm2_readpublic"].filter { path($0) == nil }
        guard missing.isEmpty else {
            throw Failure(description: "missing \(missing.joined(separator: ", ")): install swtpm, swtpm-tools and tpm2-tools (scripts/deps.sh --tests)")
        }
    }

    static func guestvault(_ arguments: [String], timeout: TimeInterval = 120) throws -> Output {
        try execute(GuestVaultBinary.path, arguments, environment: [:], timeout: timeout)
    }

    static func run(_ name: String, _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 60) throws -> Output {
        guard let executable = path(name) else { throw Failure(description: "\(name) is not installed") }
        return try execute(executable, arguments, environment: environment, timeout: timeout)
    }

    static func execute(_ executable: String, _ arguments: [String], environment: [String: String], timeout: TimeInterval) throws -> Output {
        let result = try runChild(executable, arguments, environment: environment, timeout: timeout)
        let command = ([executable] + arguments).joined(separator: " ")
        if result.timedOut { throw Failure(description: "timed out after \(Int(timeout)) s: \(command)") }
        return Output(command: command, status: result.status, stdout: result.output, stderr: result.errors)
    }

    /// Two free loopback ports P and P+1.
    static func freePortPair() throws -> UInt16 {
        let port = freeLoopbackPortPair()
        guard port != 0 else { throw Failure(description: "no two free loopback ports found") }
        return port
    }

    static func canConnect(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// One swtpm process on 127.0.0.1 ports P (TPM) and P+1 (control), in the foreground
/// so that this test owns it. deinit kills it if a test failed before ``stop()``.
final class SwtpmPeer {
    private var process: Process?
    let port: UInt16

    var tcti: [String: String] { ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"] }

    init(stateDirectory: String, keyArguments: [String]) throws {
        guard let swtpm = SwtpmTools.path("swtpm") else { throw SwtpmTools.Failure(description: "swtpm is not installed") }
        var lastError = ""
        for _ in 0..<3 {
            let port = try SwtpmTools.freePortPair()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: swtpm)
            process.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(stateDirectory)",
                                 "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                                 "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
                                 "--flags", "not-need-init,startup-clear"] + keyArguments
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline && process.isRunning && !SwtpmTools.canConnect(port + 1) { usleep(20_000) }
            if process.isRunning && SwtpmTools.canConnect(port) {
                self.process = process
                self.port = port
                return
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            lastError = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
        }
        throw SwtpmTools.Failure(description: "swtpm did not start on \(stateDirectory): \(lastError)")
    }

    /// TPM state to disk: swtpm writes tpm2-00.volatilestate.
    func storeVolatileState() throws {
        try SwtpmTools.run("swtpm_ioctl", ["--tcp", "127.0.0.1:\(port + 1)", "-v"], timeout: 30).check("swtpm_ioctl -v")
    }

    /// Shuts swtpm down through its control channel and waits (bounded) for it to exit.
    func stop() throws {
        guard let process else { return }
        try SwtpmTools.run("swtpm_ioctl", ["--tcp", "127.0.0.1:\(port + 1)", "-s"], timeout: 30).check("swtpm_ioctl -s")
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        self.process = nil
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw SwtpmTools.Failure(description: "swtpm did not exit after swtpm_ioctl -s")
        }
        process.waitUntilExit()
    }

    deinit {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// `guestvault serve` on the imported container, when this build has it: the served TPM
/// must show the same NV data and EK public keys that swtpm showed.
enum SwtpmServeStep {
    static let available: Bool = {
        guard let help = try? SwtpmTools.guestvault(["serve", "--help"], timeout: 30) else { return false }
        return help.status == 0 && help.text.contains("guestvault serve")
    }()

    static func check(vault: String, state: String, expected: SwtpmInteropTests.Observed,
                      workspace: SwtpmInteropTests.Workspace) throws {
        let port = try SwtpmTools.freePortPair()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
        process.arguments = ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)",
                             "--ctrl", "tcp:127.0.0.1:\(port + 1)", "--flags", "not-need-init,startup-clear"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning {
                kill(process.processIdentifier, SIGTERM)
                let deadline = Date().addingTimeInterval(20)
                while process.isRunning && Date() < deadline { usleep(10_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            process.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && process.isRunning && !SwtpmTools.canConnect(port + 1) { usleep(20_000) }
        guard process.isRunning else {
            throw SwtpmTools.Failure(description: "guestvault serve exited: \(String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self))")
        }
        let tcti = ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"]
        let served = try SwtpmInteropTests.observe(tcti, workspace: workspace, tag: "served")
        #expect(served.nv == expected.nv, "guestvault serve shows other NV data")
        #expect(served.ekRSA == expected.ekRSA, "guestvault serve shows another RSA EK")
        #expect(served.ekECC == expected.ekECC, "guestvault serve shows another ECC EK")
        if served.pcr16 != expected.pcr16 { print("note: guestvault serve shows PCR 16 differently from swtpm (volatile state)") }
        print("guestvault serve on the imported container: NV data \(served.nv == expected.nv ? "same" : "DIFFERENT"), EKs \(served.ekRSA == expected.ekRSA && served.ekECC == expected.ekECC ? "same" : "DIFFERENT")")
    }
}
