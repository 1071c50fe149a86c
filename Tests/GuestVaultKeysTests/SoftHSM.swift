import Foundation
import GuestVaultKeys
import GuestVaultSystem
import Synchronization
import Testing

/// Real SoftHSM2 tokens for the PKCS#11 tests.
///
/// SoftHSM reads `SOFTHSM2_CONF` and scans its token directory once, in C_Initialize.
/// SoftHSM 2.6.1 does not rescan on C_GetSlotList (its object store lists token
/// directories only when it is constructed; checked by hand with a token made by
/// softhsm2-util after C_Initialize: it stays invisible until C_Finalize and a new
/// C_Initialize). Since GuestVault keeps a module initialised while any root key uses
/// it, and tests run in parallel, a token made after the first test opened the module
/// might never be seen. So the process gets one token directory, and the first use of
/// the fixture sets `SOFTHSM2_CONF` and makes a pool of tokens with softhsm2-util
/// *before* anything loads the module; each test takes its own token from the pool.
///
/// Every PKCS#11 test must get its tokens through ``token()`` before it opens a vault,
/// so that the configuration is in place when the module is first initialised.
enum SoftHSM {
    static let modulePath = "/usr/lib/softhsm/libsofthsm2.so"
    static let soPIN = "1234"
    static let userPIN = "5678"
    /// Tokens made up front (about 10 ms each). Raise it if tests need more.
    static let poolSize = 64

    /// The path of softhsm2-util, if installed.
    static let utilityPath: String? = {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        return (directories + ["/usr/bin", "/usr/local/bin"])
            .map { "\($0)/softhsm2-util" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Why the SoftHSM2 tests cannot run on this machine, or nil. Printed once.
    static let missingReason: String? = {
        var missing: [String] = []
        if !FileManager.default.fileExists(atPath: modulePath) { missing.append(modulePath) }
        if utilityPath == nil { missing.append("softhsm2-util") }
        guard !missing.isEmpty else { return nil }
        let reason = "SoftHSM2 is missing (no \(missing.joined(separator: ", "))), so the PKCS#11 tests that need a real token are skipped; install it with `apt-get install softhsm2` (scripts/deps.sh --tests)"
        print(reason)
        return reason
    }()

    static var isAvailable: Bool { missingReason == nil }

    /// For `.enabled(if: SoftHSM.isAvailable, SoftHSM.skipComment)`.
    static var skipComment: Comment { Comment(rawValue: missingReason ?? "SoftHSM2 is installed") }

    /// A fresh token for one test: its own label, the user PIN in a 0600 file.
    static func token() throws -> SoftHSMToken {
        try pool.get().next()
    }

    private static let pool = Result { try TokenPool() }

    /// Removes the token directory when the test process ends.
    fileprivate static func removeDirectory() {
        if case .success(let pool) = pool {
            try? FileManager.default.removeItem(atPath: pool.directory)
        }
    }
}

struct SoftHSMError: Error, CustomStringConvertible {
    let description: String
}

/// One SoftHSM2 token, initialised with ``SoftHSM/soPIN`` and ``SoftHSM/userPIN``.
struct SoftHSMToken: Sendable {
    let label: String
    /// A file holding the right user PIN (and a newline), mode 0600.
    let pinFile: String
    /// A private directory for this test's own files.
    let directory: String

    var modulePath: String { SoftHSM.modulePath }
    /// What ``PKCS11RootKey/location`` says for this token.
    var location: String { "token \(label) (module \(SoftHSM.modulePath))" }

    /// Writes `contents` to a file in this token's directory with `mode`, for PIN files.
    func writeFile(_ name: String, _ contents: String, mode: UInt32 = 0o600) throws -> String {
        let path = "\(directory)/\(name)"
        try FileSystem.writeAtomically(Array(contents.utf8), to: path, mode: mode)
        return path
    }

    func open(keyLabel: String = "guestvault-root", createIfMissing: Bool, pinFile: String? = nil) throws -> PKCS11RootKey {
        try PKCS11RootKey.open(module: modulePath, tokenLabel: label, pinFile: pinFile ?? self.pinFile,
                               keyLabel: keyLabel, createIfMissing: createIfMissing)
    }
}

/// The process's token directory and its pool of ready tokens.
private final class TokenPool: Sendable {
    let directory: String
    let configuration: String
    private let labels: [String]
    private let taken = Mutex(0)

    init() throws {
        if let reason = SoftHSM.missingReason { throw SoftHSMError(description: reason) }
        // The configuration must be in place before the module's first C_Initialize.
        if let handle = dlopen(SoftHSM.modulePath, RTLD_NOW | RTLD_NOLOAD) {
            dlclose(handle)
            throw SoftHSMError(description: "\(SoftHSM.modulePath) was loaded before the SoftHSM fixture set SOFTHSM2_CONF; get tokens with SoftHSM.token() before opening any PKCS#11 vault")
        }
        let base = FileManager.default.temporaryDirectory.path
        directory = "\(base)/guestvault-softhsm-\(getpid())-\(UUID().uuidString.prefix(8))"
        configuration = "\(directory)/softhsm2.conf"
        try FileSystem.createDirectory(directory)
        try FileSystem.createDirectory("\(directory)/tokens")
        try FileSystem.writeAtomically(Array("""
            directories.tokendir = \(directory)/tokens
            objectstore.backend = file
            log.level = ERROR

            """.utf8), to: configuration)
        setenv("SOFTHSM2_CONF", configuration, 1)
        atexit { SoftHSM.removeDirectory() }

        var labels: [String] = []
        for index in 0..<SoftHSM.poolSize {
            let label = "gv-test-\(index)"
            try Self.runUtility(["--init-token", "--free", "--label", label,
                                 "--so-pin", SoftHSM.soPIN, "--pin", SoftHSM.userPIN], configuration: configuration)
            labels.append(label)
        }
        self.labels = labels
    }

    func next() throws -> SoftHSMToken {
        let index = taken.withLock { value -> Int in
            defer { value += 1 }
            return value
        }
        guard index < labels.count else {
            throw SoftHSMError(description: "all \(labels.count) pooled SoftHSM tokens are taken; raise SoftHSM.poolSize (a token made after the module is loaded is invisible to this process)")
        }
        let label = labels[index]
        let tokenDirectory = "\(directory)/\(label)"
        try FileSystem.createDirectory(tokenDirectory)
        let pinFile = "\(tokenDirectory)/user.pin"
        try FileSystem.writeAtomically(Array("\(SoftHSM.userPIN)\n".utf8), to: pinFile, mode: 0o600)
        return SoftHSMToken(label: label, pinFile: pinFile, directory: tokenDirectory)
    }

    /// Runs softhsm2-util with this pool's configuration; throws with its output if it fails.
    static func runUtility(_ arguments: [String], configuration: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: SoftHSM.utilityPath!)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = configuration
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SoftHSMError(description: "softhsm2-util \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(text)")
        }
    }
}
