import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import Synchronization
import Testing

/// One SP 800-108 input for the derivation tests.
struct DerivationSample: Sendable, CustomTestStringConvertible {
    let name: String
    let label: [UInt8]
    let context: [UInt8]
    var testDescription: String { name }

    static let all: [DerivationSample] = [
        DerivationSample(name: "KEK", label: KeyLabels.kek,
                         context: KeyLabels.kekContext(vm: UUID(uuidString: "6F9619FF-8B86-D011-B42D-00C04FC964FF")!, epoch: 7)),
        DerivationSample(name: "root key id, empty context", label: KeyLabels.rootKeyID, context: []),
        DerivationSample(name: "empty context", label: Array("label".utf8), context: []),
        DerivationSample(name: "empty label", label: [], context: Array("context".utf8)),
        DerivationSample(name: "both empty", label: [], context: []),
        DerivationSample(name: "NUL in the label, long context", label: [0x00, 0x01, 0xff],
                         context: (0..<300).map { UInt8($0 & 0xff) }),
    ]
}

/// The PKCS#11 root key on real SoftHSM2 tokens: one fresh token per test.
@Suite(.enabled(if: SoftHSM.isAvailable, SoftHSM.skipComment))
struct PKCS11RootKeyTests {
    static let knownRoot = SecretBytes(copying: (0..<32).map { UInt8(0xa0 &+ $0) })

    @Test func aGeneratedKeyGivesTheSameBlocksWhenReopened() throws {
        let token = try SoftHSM.token()
        let blocks: [SecretBytes]
        do {
            let first = try token.open(keyLabel: "root", createIfMissing: true)
            #expect(first.kind == "pkcs11")
            #expect(first.location == token.location)
            #expect(first.keyLabel == "root" && first.tokenLabel == token.label && first.modulePath == SoftHSM.modulePath)
            blocks = try DerivationSample.all.map { try first.deriveBlock(label: $0.label, context: $0.context) }
            #expect(blocks.allSatisfy { $0.count == 32 })
            #expect(Set(blocks.map { $0.unsafeCopyOfBytes() }).count == blocks.count, "different inputs give different blocks")

            // A second root key on the same token while the first is open shares the
            // loaded module and the token's login.
            let second = try token.open(keyLabel: "root", createIfMissing: false)
            for (sample, block) in zip(DerivationSample.all, blocks) {
                #expect(try second.deriveBlock(label: sample.label, context: sample.context) == block, "\(sample.name)")
            }
            #expect(try second.rootKeyID() == first.rootKeyID())
            // createIfMissing uses the key that is there instead of making another.
            let third = try token.open(keyLabel: "root", createIfMissing: true)
            #expect(try third.deriveBlock(label: DerivationSample.all[0].label, context: DerivationSample.all[0].context) == blocks[0])
            // Another label on the same token is another key.
            let other = try token.open(keyLabel: "other", createIfMissing: true)
            #expect(try other.deriveBlock(label: DerivationSample.all[0].label, context: DerivationSample.all[0].context) != blocks[0])
        }
        // Reopened after every root key of this test went away.
        let reopened = try token.open(keyLabel: "root", createIfMissing: false)
        for (sample, block) in zip(DerivationSample.all, blocks) {
            #expect(try reopened.deriveBlock(label: sample.label, context: sample.context) == block, "\(sample.name)")
        }
    }

    @Test func theRootKeyIsSensitiveAndNeverLeavesTheToken() throws {
        let token = try SoftHSM.token()
        let key = try token.open(createIfMissing: true)
        let attributes = try key.keyAttributes()
        #expect(attributes.extractable == false)
        #expect(attributes.sensitive == true)
        #expect(attributes.neverExtractable == true)
        #expect(attributes.alwaysSensitive == true)
        #expect(attributes.canSign == true)
        #expect(attributes.valueLength == 32)
        #expect(try key.keyValueReadOutcome() == .refused("CKR_ATTRIBUTE_SENSITIVE (0x11)"))
        // The same holds when the key is found again rather than generated.
        #expect(try token.open(createIfMissing: false).keyValueReadOutcome() == .refused("CKR_ATTRIBUTE_SENSITIVE (0x11)"))
    }

    @Test func anImportedKeyMatchesTheSoftwareKDFAndTheFileBackend() throws {
        let token = try SoftHSM.token()
        let root = Self.knownRoot
        let key = try PKCS11RootKey.importRootKey(root, module: token.modulePath, tokenLabel: token.label,
                                                  pinFile: token.pinFile, keyLabel: "imported")
        let directory = TemporaryDirectory()
        try FileRootKey.write(root, to: directory.file("root.key"), passphrase: nil)
        let file = try FileRootKey.open(at: directory.file("root.key"), passphrase: nil)
        for sample in DerivationSample.all {
            let block = try key.deriveBlock(label: sample.label, context: sample.context)
            let expected = try KBKDF.counterHMACSHA256(key: root, label: sample.label, context: sample.context, outputByteCount: 32)
            #expect(block == expected, "\(sample.name): KBKDF")
            let input = sp800108SingleBlockInput(label: sample.label, context: sample.context)
            #expect(block.unsafeCopyOfBytes() == (try HMACSHA256.authenticationCode(for: input, key: root)), "\(sample.name): HMAC")
            #expect(try file.deriveBlock(label: sample.label, context: sample.context) == block, "\(sample.name): file backend")
        }
        #expect(try key.rootKeyID() == file.rootKeyID())

        // Imported, it is still sensitive and not extractable (but was not always so).
        let attributes = try key.keyAttributes()
        #expect(attributes.extractable == false && attributes.sensitive == true && attributes.valueLength == 32)
        #expect(try key.keyValueReadOutcome() == .refused("CKR_ATTRIBUTE_SENSITIVE (0x11)"))
        // And found again by label.
        let reopened = try token.open(keyLabel: "imported", createIfMissing: false)
        #expect(try reopened.rootKeyID() == file.rootKeyID())
    }

    @Test func importRefusesALabelThatIsTaken() throws {
        let token = try SoftHSM.token()
        let first = try PKCS11RootKey.importRootKey(Self.knownRoot, module: token.modulePath, tokenLabel: token.label,
                                                    pinFile: token.pinFile, keyLabel: "taken")
        let id = try first.rootKeyID()
        let other = try SecretBytes(randomCount: 32)
        let error = try #require(throws: VaultError.self) {
            try PKCS11RootKey.importRootKey(other, module: token.modulePath, tokenLabel: token.label,
                                            pinFile: token.pinFile, keyLabel: "taken")
        }
        #expect(error.code == .alreadyExists)
        #expect(error.subject == token.location)
        #expect(error.reason.contains("\"taken\"") && error.reason.contains("nothing was changed"))
        #expect(try token.open(keyLabel: "taken", createIfMissing: false).rootKeyID() == id, "the first key is untouched")

        // A generated key's label is taken too.
        _ = try token.open(keyLabel: "generated", createIfMissing: true)
        let overGenerated = try #require(throws: VaultError.self) {
            try PKCS11RootKey.importRootKey(other, module: token.modulePath, tokenLabel: token.label,
                                            pinFile: token.pinFile, keyLabel: "generated")
        }
        #expect(overGenerated.code == .alreadyExists)

        let short = try #require(throws: VaultError.self) {
            try PKCS11RootKey.importRootKey(SecretBytes(copying: [1, 2, 3]), module: token.modulePath, tokenLabel: token.label,
                                            pinFile: token.pinFile, keyLabel: "short")
        }
        #expect(short.code == .invalidArgument)
    }

    @Test func aWrongPINIsRefusedNamingTheToken() throws {
        let token = try SoftHSM.token()
        let wrongPIN = "wrong-pin-3141"
        let wrongFile = try token.writeFile("wrong.pin", "\(wrongPIN)\n")
        let error = try #require(throws: VaultError.self) { try token.open(createIfMissing: true, pinFile: wrongFile) }
        #expect(error.code == .wrongPIN)
        #expect(error.subject == token.location)
        // The PKCS#11 failure is kept underneath, and shows in the one-line message.
        #expect(ErrorChain.message(of: error).contains("C_Login returned CKR_PIN_INCORRECT (0xa0)"))
        #expect(error.reason.contains(wrongFile))
        #expect(!error.description.contains(wrongPIN) && !error.description.contains(SoftHSM.userPIN))
        // Nothing was created on the token.
        #expect((try #require(throws: VaultError.self) { try token.open(createIfMissing: false) }).code == .vaultNotFound)

        // Still refused while this process is logged in to the token with the right PIN
        // (Cryptoki then answers CKR_USER_ALREADY_LOGGED_IN without checking the PIN).
        let open = try token.open(createIfMissing: true)
        let again = try #require(throws: VaultError.self) { try token.open(createIfMissing: false, pinFile: wrongFile) }
        #expect(again.code == .wrongPIN && again.subject == token.location)
        #expect(!again.description.contains(wrongPIN))
        _ = try open.rootKeyID()
    }

    @Test func aPINFileMayEndWithOrWithoutANewline() throws {
        let token = try SoftHSM.token()
        let id = try token.open(createIfMissing: true).rootKeyID()
        for contents in [SoftHSM.userPIN, "\(SoftHSM.userPIN)\n", "\(SoftHSM.userPIN)\r\n"] {
            let file = try token.writeFile("pin-\(contents.utf8.count)", contents)
            #expect(try token.open(createIfMissing: false, pinFile: file).rootKeyID() == id, "\(contents.debugDescription)")
        }
    }

    @Test func aMissingTokenIsReported() throws {
        let token = try SoftHSM.token()
        let error = try #require(throws: VaultError.self) {
            try PKCS11RootKey.open(module: SoftHSM.modulePath, tokenLabel: "no-such-token", pinFile: token.pinFile,
                                   keyLabel: "root", createIfMissing: true)
        }
        #expect(error.code == .tokenNotFound)
        #expect(error.subject == "token no-such-token (module \(SoftHSM.modulePath))")
        #expect(error.reason.contains("no token labelled \"no-such-token\""))
        #expect(error.reason.contains("softhsm2-util --init-token"))

        for label in ["", String(repeating: "x", count: 33), "trailing "] {
            let invalid = try #require(throws: VaultError.self) {
                try PKCS11RootKey.open(module: SoftHSM.modulePath, tokenLabel: label, pinFile: token.pinFile,
                                       keyLabel: "root", createIfMissing: true)
            }
            #expect(invalid.code == .invalidArgument, "\(label.debugDescription)")
        }
    }

    @Test func openingWithoutCreatingNeedsTheKey() throws {
        let token = try SoftHSM.token()
        let error = try #require(throws: VaultError.self) { try token.open(keyLabel: "absent", createIfMissing: false) }
        #expect(error.code == .vaultNotFound)
        #expect(error.subject == token.location && error.reason.contains("\"absent\""))
    }

    @Test func anExtractableRootKeyIsRefused() throws {
        let token = try SoftHSM.token()
        try PKCS11RootKey.storeExtractableKeyForTesting(Self.knownRoot, module: token.modulePath, tokenLabel: token.label,
                                                        pinFile: token.pinFile, keyLabel: "careless")
        let error = try #require(throws: VaultError.self) { try token.open(keyLabel: "careless", createIfMissing: true) }
        #expect(error.code == .insecurePermissions)
        #expect(error.subject == token.location)
        #expect(error.reason.contains("CKA_EXTRACTABLE is true"))
    }

    @Test func derivingResumesAfterTheTokenClosesItsSessions() throws {
        let token = try SoftHSM.token()
        let key = try token.open(createIfMissing: true)
        let sample = DerivationSample.all[0]
        let before = try key.deriveBlock(label: sample.label, context: sample.context)
        try key.closeAllTokenSessions()
        #expect(try key.deriveBlock(label: sample.label, context: sample.context) == before)
        try key.closeAllTokenSessions()
        #expect(try key.keyAttributes().extractable == false)
        #expect(try key.deriveBlock(label: sample.label, context: sample.context) == before)
    }

    @Test func concurrentDerivationsAgreeWithSequentialOnes() throws {
        let token = try SoftHSM.token()
        let key = try token.open(createIfMissing: true)
        let count = 64
        let expected = try (0..<count).map { try key.deriveBlock(label: KeyLabels.kek, context: [UInt8($0)]) }
        let results = Mutex<[Int: Result<SecretBytes, any Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: count) { index in
            let result = Result { try key.deriveBlock(label: KeyLabels.kek, context: [UInt8(index)]) }
            results.withLock { $0[index] = result }
        }
        let collected = results.withLock { $0 }
        for index in 0..<count {
            #expect(try collected[index]?.get() == expected[index], "derivation \(index)")
        }
    }
}

/// Failures that happen before any token is touched: no SoftHSM needed.
@Suite struct PKCS11OpeningErrorTests {
    let directory = TemporaryDirectory()

    func pinFile(_ contents: String, mode: UInt32 = 0o600, name: String = "user.pin") throws -> String {
        let path = directory.file(name)
        try FileSystem.writeAtomically(Array(contents.utf8), to: path, mode: mode)
        return path
    }

    func open(module: String, pinFile: String) throws -> PKCS11RootKey {
        try PKCS11RootKey.open(module: module, tokenLabel: "any", pinFile: pinFile, keyLabel: "root", createIfMissing: true)
    }

    @Test func anUnusableModuleIsReported() throws {
        let pin = try pinFile("5678\n")
        // Root-owned, in root-owned directories that only root can write: passes the
        // module checks, then fails to load.
        let trusted = "/var/lib/guestvault-test-not-a-module-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: trusted, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: trusted) }
        let notALibrary = "\(trusted)/not-a-module.so"
        try FileSystem.writeAtomically(Array("not an ELF file".utf8), to: notALibrary, mode: 0o644)
        let cases: [(module: String, says: String)] = [
            ("/nonexistent/libnothing-pkcs11.so", "No such file"),
            ("libsofthsm2.so", "absolute"),
            (notALibrary, "cannot load the module"),
        ]
        for (module, says) in cases {
            let error = try #require(throws: VaultError.self) { try open(module: module, pinFile: pin) }
            #expect(error.code == .moduleUnavailable, "\(module)")
            #expect(error.subject == "token any (module \(module))")
            #expect(ErrorChain.message(of: error).contains(says), "\(module): \(ErrorChain.message(of: error))")
        }
    }

    @Test(arguments: [0o644, 0o640, 0o620, 0o604, 0o602])
    func aPINFileOthersCanReachIsRefused(mode: Int) throws {
        let pin = try pinFile("5678\n", mode: UInt32(mode))
        let error = try #require(throws: VaultError.self) { try open(module: "/nonexistent/module.so", pinFile: pin) }
        #expect(error.code == .insecurePermissions)
        #expect(error.subject == pin)
        #expect(error.description.contains("chmod 600 \(pin)"))
        #expect(!error.description.contains("5678"))
    }

    @Test(arguments: ["", "\n", "\r\n"])
    func anEmptyPINFileIsRefused(contents: String) throws {
        let pin = try pinFile(contents)
        let error = try #require(throws: VaultError.self) { try open(module: "/nonexistent/module.so", pinFile: pin) }
        #expect(error.code == .invalidArgument)
        #expect(error.subject == pin && error.reason.contains("empty"))
    }

    @Test func otherUnusablePINFilesAreRefused() throws {
        let twoLines = try pinFile("5678\n1234\n", name: "two-lines.pin")
        let lines = try #require(throws: VaultError.self) { try open(module: "/nonexistent/module.so", pinFile: twoLines) }
        #expect(lines.code == .invalidArgument && lines.reason.contains("more than one line"))
        #expect(!lines.description.contains("5678"))

        let large = try pinFile(String(repeating: "9", count: 4097), name: "large.pin")
        let tooLarge = try #require(throws: VaultError.self) { try open(module: "/nonexistent/module.so", pinFile: large) }
        #expect(tooLarge.code == .io && tooLarge.subject == large)

        let missing = directory.file("missing.pin")
        let absent = try #require(throws: VaultError.self) { try open(module: "/nonexistent/module.so", pinFile: missing) }
        #expect(absent.code == .vaultNotFound && absent.subject == missing && absent.reason.contains("no PIN file"))
    }
}
