import Foundation
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import Testing

/// Issue 13.2: the vault directory, every file in it and the PKCS#11 module it names are
/// trusted only if another local user could not have made or changed them (StrictModes).
@Suite(.enabled(if: OtherUser.isAvailable, "needs root and setpriv"))
struct VaultOwnershipTests {
    func expectRefused(_ path: String, mentioning: String, _ body: () throws -> Void,
                       sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("opened although \(path) is not trusted", sourceLocation: sourceLocation)
        } catch let error as VaultError {
            #expect(error.code == .insecurePermissions, "\(error)", sourceLocation: sourceLocation)
            #expect(ErrorChain.category(of: error) == .permission, sourceLocation: sourceLocation)
            #expect(error.description.contains(mentioning), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func aVaultInADirectoryAnotherUserOwnsIsRefused() throws {
        let attacker = try OtherUser.directory()
        defer { try? FileManager.default.removeItem(atPath: attacker) }
        // Made somewhere safe, then found in the other user's directory: that user could
        // swap root.key or vault.json at will.
        let dir = TemporaryDirectory()
        _ = try KeyVault.createFileVault(at: dir.file("vault"))
        let moved = "\(attacker)/vault"
        #expect(rename(dir.file("vault"), moved) == 0)
        expectRefused(moved, mentioning: attacker) { _ = try KeyVault.open(at: moved) }
        // Nor is one made there.
        expectRefused(attacker, mentioning: attacker) { _ = try KeyVault.createFileVault(at: "\(attacker)/new") }
    }

    @Test func aVaultDirectoryAnotherUserOwnsIsRefused() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        #expect(chown(path, OtherUser.uid, OtherUser.gid) == 0)
        expectRefused(path, mentioning: "uid \(OtherUser.uid)") { _ = try KeyVault.open(at: path) }
    }

    @Test(arguments: ["root.key", "vault.json"])
    func aVaultFileAnotherUserOwnsIsRefused(name: String) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        #expect(chown("\(path)/\(name)", OtherUser.uid, OtherUser.gid) == 0)
        expectRefused(path, mentioning: name) { _ = try KeyVault.open(at: path) }
    }

    @Test func aStrayFileOthersCanWriteInTheVaultIsRefused() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        try FileSystem.writeAtomically(Array("x".utf8), to: "\(path)/counters/stray.gen", mode: 0o666)
        expectRefused(path, mentioning: "stray.gen") { _ = try KeyVault.open(at: path) }
    }

    /// A module another user owns (or could replace) is never loaded: loading runs its code.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: SoftHSM.modulePath)))
    func aPKCS11ModuleAnotherUserControlsIsNotLoaded() throws {
        let token = try SoftHSM.token()
        // A copy of the real module, owned by the other user, in a root-owned directory.
        let trusted = "/var/lib/guestvault-test-module-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: trusted, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: trusted) }
        let owned = "\(trusted)/libsofthsm2.so"
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: SoftHSM.modulePath).resolvingSymlinksInPath().path, toPath: owned)
        #expect(chown(owned, OtherUser.uid, OtherUser.gid) == 0)
        expectRefused(owned, mentioning: "uid \(OtherUser.uid)") {
            _ = try PKCS11RootKey.open(module: owned, tokenLabel: token.label, pinFile: token.pinFile, keyLabel: "root", createIfMissing: true)
        }
        // A root-owned copy in a directory the other user owns.
        let attacker = try OtherUser.directory()
        defer { try? FileManager.default.removeItem(atPath: attacker) }
        let planted = "\(attacker)/libsofthsm2.so"
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: SoftHSM.modulePath).resolvingSymlinksInPath().path, toPath: planted)
        expectRefused(planted, mentioning: attacker) {
            _ = try PKCS11RootKey.open(module: planted, tokenLabel: token.label, pinFile: token.pinFile, keyLabel: "root", createIfMissing: true)
        }
        // A PIN file the other user owns is not trusted either.
        let pin = "\(trusted)/other.pin"
        try FileSystem.writeAtomically(Array("\(SoftHSM.userPIN)\n".utf8), to: pin)
        #expect(chown(pin, OtherUser.uid, OtherUser.gid) == 0)
        expectRefused(pin, mentioning: "uid \(OtherUser.uid)") {
            _ = try PKCS11RootKey.open(module: SoftHSM.modulePath, tokenLabel: token.label, pinFile: pin, keyLabel: "root", createIfMissing: true)
        }
    }
}
