import Foundation
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// Issue 14: state blobs on the control channel are sealed (docs/MIGRATION-BLOB.md). The
/// format against an independent vector, and `guestvault serve` over its real control
/// channel: blobs leave sealed, only the container's holder opens them, and a changed
/// blob, an older blob set, another VM's blob or a plaintext blob is refused with the
/// TPM left stopped.
@Suite struct MigrationBlobTests {
    // MARK: The format

    struct Vector: Decodable {
        let dek, vm, containerID, blobSetID, nonce, payload, rootKey, sealed: String
        let blobType: UInt16
        let generation: UInt64
        let aadByteCount: Int
    }

    static func hex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            out.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    static func vector() throws -> Vector {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Vectors/formats/migration-blob/sealed-permanent.json")
        return try JSONDecoder().decode(Vector.self, from: Data(contentsOf: url))
    }

    @Test func theVectorIsSealedAndOpenedByteForByte() throws {
        let v = try Self.vector()
        let root = try SealedMigrationBlob.rootKey(dek: SecretBytes(copying: Self.hex(v.dek)), containerID: Self.hex(v.containerID))
        #expect(root.constantTimeEquals(Self.hex(v.rootKey)))
        let binding = SealedMigrationBlob.Binding(vm: Self.hex(v.vm), containerID: Self.hex(v.containerID), blob: .permanent,
                                                  generation: v.generation, blobSetID: Self.hex(v.blobSetID))
        let sealed = try SealedMigrationBlob.seal(Self.hex(v.payload), binding: binding, rootKey: root, nonce: Self.hex(v.nonce))
        #expect(sealed == Self.hex(v.sealed))
        #expect(SealedMigrationBlob.isSealed(sealed))
        let opened = try SealedMigrationBlob.open(Self.hex(v.sealed), rootKey: root, file: "vector")
        #expect(opened.payload == Self.hex(v.payload))
        #expect(opened.binding == binding)
        // The envelope is swtpm's, with the migration-encrypted flags (0x16).
        let header = try SwtpmStateFile.parseHeader(sealed, file: "vector")
        #expect(header.flags == SealedMigrationBlob.envelopeFlags)
        #expect(v.aadByteCount == SealedMigrationBlob.envelopeByteCount + SealedMigrationBlob.sealedHeaderByteCount)
    }

    /// Every byte is covered: a flip anywhere is refused (the header as AAD and in the
    /// key derivation, the ciphertext and the tag by GCM), never opened.
    @Test func aFlippedByteAnywhereIsRefused() throws {
        let v = try Self.vector()
        let root = SecretBytes(copying: Self.hex(v.rootKey))
        let sealed = Self.hex(v.sealed)
        for index in sealed.indices {
            var changed = sealed
            changed[index] ^= 0x01
            #expect(throws: SwtpmFormatError.self, "byte \(index)") {
                _ = try SealedMigrationBlob.open(changed, rootKey: root, file: "flipped")
            }
        }
        // Cut short and lengthened.
        #expect(throws: SwtpmFormatError.self) { _ = try SealedMigrationBlob.open(Array(sealed.dropLast()), rootKey: root, file: "cut") }
        #expect(throws: SwtpmFormatError.self) { _ = try SealedMigrationBlob.open(sealed + [0], rootKey: root, file: "long") }
        // Another container's key.
        let other = try SealedMigrationBlob.rootKey(dek: SecretBytes(copying: Self.hex(v.dek)), containerID: [UInt8](repeating: 7, count: 16))
        let error = #expect(throws: SwtpmFormatError.self) { _ = try SealedMigrationBlob.open(sealed, rootKey: other, file: "other") }
        #expect(error?.code == .authenticationFailed)
    }

    // MARK: Over the control channel of `guestvault serve`

    /// GET_STATEBLOB's reply: result, flags and the whole blob (read to its length).
    static func getBlob(_ type: PTMBlobType, at address: StreamSocket.Address) throws -> (result: UInt32, flags: UInt32, blob: [UInt8]) {
        let socket = try StreamSocket.connect(address)
        defer { socket.close() }
        try socket.setTimeout(seconds: 30)
        try socket.send(ControlRequest.getStateBlob(type: type, flags: .decrypted, offset: 0).encoded())
        var bytes: [UInt8] = []
        while true {
            let piece = try socket.receive()
            if piece.isEmpty { break }
            bytes += piece
            if bytes.count >= 4, UInt32(bigEndianBytes: bytes[0..<4])! != 0 { break }
            if bytes.count >= 16, bytes.count >= 16 + Int(UInt32(bigEndianBytes: bytes[8..<12])!) { break }
        }
        let result = UInt32(bigEndianBytes: bytes[0..<4])!
        guard result == 0, bytes.count >= 16 else { return (result, 0, []) }
        return (result, UInt32(bigEndianBytes: bytes[4..<8])!, Array(bytes[16...]))
    }

    /// SET_STATEBLOB's result.
    static func setBlob(_ type: PTMBlobType, _ blob: [UInt8], flags: PTMStateFlags = .encrypted, at address: StreamSocket.Address) throws -> UInt32 {
        let reply = try control(.setStateBlob(type: type, flags: flags, blob: blob), at: address)
        return UInt32(bigEndianBytes: reply.prefix(4))!
    }

    static func control(_ request: ControlRequest, at address: StreamSocket.Address) throws -> [UInt8] {
        let socket = try StreamSocket.connect(address)
        defer { socket.close() }
        try socket.setTimeout(seconds: 30)
        try socket.send(request.encoded())
        return try socket.receive()
    }

    static func result(_ request: ControlRequest, at address: StreamSocket.Address) throws -> UInt32 {
        UInt32(bigEndianBytes: try control(request, at: address).prefix(4))!
    }

    /// Whether any `window`-byte run of `needle` appears in `haystack`.
    static func containsAnyRun(of needle: [UInt8], in haystack: [UInt8], window: Int = 32) -> Bool {
        guard needle.count >= window, haystack.count >= window else { return false }
        var runs = Set<[UInt8]>()
        for start in stride(from: 0, through: needle.count - window, by: 1) { runs.insert(Array(needle[start..<(start + window)])) }
        for start in 0...(haystack.count - window) where runs.contains(Array(haystack[start..<(start + window)])) { return true }
        return false
    }

    static func entry(_ name: String, vault: String, state: String) throws -> [UInt8] {
        let read = try Run.guestvault(["get", "--vault", vault, state, name])
        try #require(read.status == 0, "\(read.stderr)")
        return [UInt8](read.stdout)
    }

    /// The blobs leave sealed (no run of the plaintext state in them); a copy of the
    /// container opens them and runs from them; a flipped byte, another VM's blob and a
    /// plaintext blob are refused and the TPM stays stopped.
    @Test func blobsLeaveSealedAndOnlyTheContainersHolderOpensThem() throws {
        let dir = TemporaryDirectory("migration-blobs")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let permanent = try Self.entry("tpm.permanent", vault: vault, state: state)
        let source = try ServedTPM(vault: vault, state: state)
        let perm = try Self.getBlob(.permanent, at: source.controlAddress)
        let volatile = try Self.getBlob(.volatile, at: source.controlAddress)
        let save = try Self.getBlob(.savestate, at: source.controlAddress)
        #expect(perm.result == 0 && volatile.result == 0 && save.result == PTMResult.retry.rawValue)
        #expect(perm.flags == PTMStateFlags.encrypted.rawValue && volatile.flags == PTMStateFlags.encrypted.rawValue)
        #expect(SealedMigrationBlob.isSealed(perm.blob) && SealedMigrationBlob.isSealed(volatile.blob))
        #expect(!Self.containsAnyRun(of: permanent, in: perm.blob), "the permanent state is in the blob in plaintext")
        let a = try SealedMigrationBlob.peek(perm.blob, file: "perm"), b = try SealedMigrationBlob.peek(volatile.blob, file: "vol")
        #expect(a.blobSetID == b.blobSetID && a.generation == b.generation, "the blobs of one GET round are one set")
        #expect(source.terminate() == 0)

        // The destination: a copy of the container (the same DEK, as send/receive gives).
        let copy = dir.file("copy.state")
        try FileManager.default.copyItem(atPath: state, toPath: copy)
        let log = dir.file("destination.log")
        let destination = try ServedTPM(vault: vault, state: copy, flags: "", logFile: log)
        let address = destination.controlAddress

        // A flipped byte in the ciphertext: refused, the TPM stays stopped.
        var flipped = perm.blob
        flipped[flipped.count - 40] ^= 0x80
        #expect(try Self.result(.stop, at: address) == 0)
        #expect(try Self.setBlob(.permanent, flipped, at: address) != 0)
        #expect(try Self.result(.getTPMEstablished, at: address) == PTMResult.badOrdinal.rawValue, "the TPM is not running")
        #expect(ServerLimitsTests.log(log).contains("does not authenticate"))

        // Plaintext (an swtpm without a key): refused without --allow-plaintext-migration.
        let plain = try SwtpmStateFile.encodeBlob(permanent, key: nil)
        #expect(try Self.setBlob(.permanent, plain, flags: [], at: address) != 0)
        #expect(ServerLimitsTests.log(log).contains("--allow-plaintext-migration"))

        // Another VM's blob, sealed the same way: refused before anything is decrypted.
        let otherDir = TemporaryDirectory("migration-blobs-other")
        let (otherVault, otherState) = try ServerLimitsTests.makeTPM(otherDir)
        let other = try ServedTPM(vault: otherVault, state: otherState)
        let foreign = try Self.getBlob(.permanent, at: other.controlAddress)
        #expect(other.terminate() == 0)
        #expect(try Self.setBlob(.permanent, foreign.blob, at: address) != 0)
        #expect(ServerLimitsTests.log(log).contains("belongs to VM"))
        // A blob for the wrong type.
        #expect(try Self.setBlob(.volatile, perm.blob, at: address) != 0)
        #expect(try Self.result(.getTPMEstablished, at: address) == PTMResult.badOrdinal.rawValue)

        // The real set opens, and the TPM runs from it.
        #expect(try Self.setBlob(.permanent, perm.blob, at: address) == 0)
        #expect(try Self.setBlob(.volatile, volatile.blob, at: address) == 0)
        #expect(try Self.result(.initialize(flags: .deleteVolatile), at: address) == 0)
        #expect(try Self.result(.getTPMEstablished, at: address) == 0)
        let data = try StreamSocket.connect(destination.dataAddress)
        try ServerLimitsTests.expectRandom(on: data)
        data.close()
        #expect(destination.terminate() == 0)
        // It is now the accepted set: replaying it is refused as a rollback.
        let again = try ServedTPM(vault: vault, state: copy, flags: "", logFile: dir.file("again.log"))
        #expect(try Self.setBlob(.permanent, perm.blob, at: again.controlAddress) != 0)
        #expect(ServerLimitsTests.log(dir.file("again.log")).contains("older blob set replayed"))
        #expect(again.terminate() == 0)
    }

    /// A blob set made before an NV write is refused once the container holds the write:
    /// an older blob set is a rollback.
    @Test(.enabled(if: Peers.tpm2Tools, "needs tpm2-tools"))
    func anOlderBlobSetIsRefusedAsARollback() throws {
        let dir = TemporaryDirectory("migration-rollback")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let source = try ServedTPM(vault: vault, state: state)
        let old = (try Self.getBlob(.permanent, at: source.controlAddress), try Self.getBlob(.volatile, at: source.controlAddress))
        _ = try Run.program(Run.which("tpm2_nvdefine")!, ["0x1500030", "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite"], environment: source.tcti)
        let new = (try Self.getBlob(.permanent, at: source.controlAddress), try Self.getBlob(.volatile, at: source.controlAddress))
        #expect(source.terminate() == 0)

        let log = dir.file("destination.log")
        let destination = try ServedTPM(vault: vault, state: state, flags: "", logFile: log)
        let address = destination.controlAddress
        #expect(try Self.setBlob(.permanent, old.0.blob, at: address) != 0)
        #expect(ServerLimitsTests.log(log).contains("older blob set replayed"))
        #expect(try Self.result(.getTPMEstablished, at: address) == PTMResult.badOrdinal.rawValue)
        // Mixing blobs of two sets is refused too.
        #expect(try Self.setBlob(.permanent, new.0.blob, at: address) == 0)
        #expect(try Self.setBlob(.volatile, old.1.blob, at: address) != 0)
        // The newer set goes in.
        #expect(try Self.setBlob(.permanent, new.0.blob, at: address) == 0)
        #expect(try Self.setBlob(.volatile, new.1.blob, at: address) == 0)
        #expect(try Self.result(.initialize(flags: .deleteVolatile), at: address) == 0)
        let read = try Run.program(Run.which("tpm2_nvreadpublic")!, ["0x1500030"], environment: destination.tcti)
        #expect(read.status == 0, "the NV index of the newer set is there: \(read.stderr)")
        #expect(destination.terminate() == 0)
    }

    /// With --allow-plaintext-migration the blobs leave in plaintext (swtpm's envelope)
    /// and plaintext is accepted; the log says so.
    @Test func plaintextOnlyWhenAskedFor() throws {
        let dir = TemporaryDirectory("migration-plaintext")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let log = dir.file("serve.log")
        let source = try ServedTPM(vault: vault, state: state, logFile: log, extraArguments: ["--allow-plaintext-migration"])
        let perm = try Self.getBlob(.permanent, at: source.controlAddress)
        #expect(perm.flags == 0 && !SealedMigrationBlob.isSealed(perm.blob))
        let contents = try SwtpmStateFile.decode(perm.blob, file: "perm", key: nil, form: .controlChannelBlob)
        #expect(contents.payload == (try Self.entry("tpm.permanent", vault: vault, state: state)))
        #expect(ServerLimitsTests.log(log).contains("plaintext"))
        #expect(source.terminate() == 0)
    }

    /// --migration-key as swtpm spells it: parsed, and blobs leave with swtpm's migration
    /// encryption, which a server with the same key opens and one without refuses.
    @Test func swtpmMigrationKeySpec() throws {
        let spec = try MigrationKeySpec(parsing: "pwdfd=5,mode=aes-256-cbc,kdf=sha512")
        #expect(spec.source == .passphraseDescriptor(5) && spec.mode == .aes256CBC && spec.kdf == .sha512)
        #expect(try MigrationKeySpec(parsing: "file=/k,format=binary").format == .binary)
        #expect(throws: SwtpmFormatError.self) { _ = try MigrationKeySpec(parsing: "file=/k,kdf=sha512") }
        #expect(throws: SwtpmFormatError.self) { _ = try MigrationKeySpec(parsing: "file=/k,fd=3") }
        #expect(throws: SwtpmFormatError.self) { _ = try MigrationKeySpec(parsing: "mode=aes-256-cbc") }
        var migration = TPMServer.Migration()
        try migration.parseSwtpmMigrationOption("incoming,release-lock-outgoing")
        #expect(migration.incoming && migration.releaseLockOutgoing)

        let dir = TemporaryDirectory("migration-swtpm-key")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let keyFile = dir.file("migration.key")
        try Data(String(repeating: "ab", count: 32).utf8).write(to: URL(fileURLWithPath: keyFile))
        let argument = "file=\(keyFile),mode=aes-256-cbc"
        let source = try ServedTPM(vault: vault, state: state, extraArguments: ["--migration-key", argument])
        let perm = try Self.getBlob(.permanent, at: source.controlAddress)
        #expect(source.terminate() == 0)
        #expect(perm.flags == 0 && !SealedMigrationBlob.isSealed(perm.blob), "swtpm's reply flags for a migration-key blob")
        let header = try SwtpmStateFile.parseHeader(perm.blob, file: "perm")
        #expect(header.flags.contains(.migrationEncrypted) && header.flags.contains(.migrationKey256))

        let withoutLog = dir.file("without.log")
        let without = try ServedTPM(vault: vault, state: state, flags: "", logFile: withoutLog)
        #expect(try Self.setBlob(.permanent, perm.blob, at: without.controlAddress) == PTMResult.keyNotFound.rawValue)
        #expect(ServerLimitsTests.log(withoutLog).contains("start it with --migration-key"))
        #expect(without.terminate() == 0)
        let with = try ServedTPM(vault: vault, state: state, flags: "", extraArguments: ["--migration-key", argument])
        #expect(try Self.setBlob(.permanent, perm.blob, at: with.controlAddress) == 0)
        #expect(with.terminate() == 0)
    }
}
