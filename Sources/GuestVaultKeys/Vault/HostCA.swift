import GuestVaultCore
public import GuestVaultCrypto
import GuestVaultSystem

extension KeyVault {
    /// The vault's host CA, which issues the EK certificates of the TPMs it manufactures.
    /// Made on first use and kept in the vault directory: `ca.key` (0600) holds its
    /// private key and certificate sealed under a key derived from the root key, and
    /// `ca.pem` (0644) the certificate, for users to check EK certificates against.
    ///
    /// Read from disk on every call (it is needed once per TPM manufacture). `ca.pem`
    /// is rewritten when it is missing or differs from the sealed certificate.
    public func hostCA() throws -> CertificateAuthority {
        let keyPath = FileSystem.join(path, Self.hostCAKeyName)
        let ca = try HostCAFile.loadOrCreate(at: keyPath, backend: backend, rootKeyID: rootKeyID)
        try HostCAFile.publishCertificate(ca, at: FileSystem.join(path, Self.hostCACertificateName))
        return ca
    }

    static let hostCAKeyName = "ca.key"
    static let hostCACertificateName = "ca.pem"
}

/// `ca.key`: the host CA's PKCS#8 private key and DER certificate, sealed with
/// AES-256-GCM under `deriveBlock("GuestVault v1 host CA seal", "")`.
///
/// ```
/// 0   4   magic "GVCA"
/// 4   1   version 1
/// 5   3   zero
/// 8   4   N, the length of the sealed payload (u32 BE): plaintext + 16-byte tag
/// 12  12  nonce
/// 24  N   sealed payload; AAD = bytes 0..<12 || root key id (16)
///
/// plaintext: K (u32 BE) || PKCS#8 private key (K bytes) || certificate DER (the rest)
/// ```
///
/// The file is at most 16 KiB and is treated as hostile until its tag verifies; the
/// certificate is sealed with the key so `ca.pem` never has to be trusted.
enum HostCAFile {
    static let magic = Array("GVCA".utf8)
    static let version: UInt8 = 1
    static let headerCount = 12
    static let payloadOffset = 24
    static let maximumCount = 16 * 1024
    static let sealLabel = Array("GuestVault v1 host CA seal".utf8)

    static func loadOrCreate(at path: String, backend: any RootKeyBackend, rootKeyID: [UInt8]) throws -> CertificateAuthority {
        let sealKey = try backend.deriveBlock(label: sealLabel, context: [])
        if FileSystem.exists(path) {
            return try load(at: path, sealKey: sealKey, rootKeyID: rootKeyID)
        }
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA \(hexString(rootKeyID.prefix(4)))")
        let bytes = try seal(ca, sealKey: sealKey, rootKeyID: rootKeyID)
        do {
            // Linked into place, never replacing: when two processes make a CA at once,
            // exactly one wins and the other loads it.
            try DurableFile.write(bytes, to: path, mode: FileSystem.privateFileMode, .creatingNew)
        } catch let error as SystemError where error.code == .fileExists {
            return try load(at: path, sealKey: sealKey, rootKeyID: rootKeyID)
        } catch {
            throw VaultError.file(path, "could not write the host CA", error)
        }
        return ca
    }

    static func load(at path: String, sealKey: SecretBytes, rootKeyID: [UInt8]) throws -> CertificateAuthority {
        let bytes = try SecretFile.readPrivate(path, what: "host CA key", limit: maximumCount, sealed: true, tooLarge: .corrupt,
                                               missing: VaultError(.io, subject: path, reason: "could not read: no such file"))
        var reader = ByteReader(bytes, subject: path)
        let header: [UInt8], nonce: [UInt8], sealedCount: UInt32
        do {
            header = try reader.array(8, "magic and version")
            sealedCount = try reader.u32("sealed length")
            nonce = try reader.array(AESGCM.nonceByteCount, "nonce")
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "not a host CA key file of version \(version)", underlying: error)
        }
        guard header == magic + [version, 0, 0, 0], reader.remaining >= AESGCM.tagByteCount + 4 else {
            throw VaultError(.corrupt, subject: path, reason: "not a host CA key file of version \(version)")
        }
        guard Int(exactly: sealedCount) == reader.remaining else {
            throw VaultError(.corrupt, subject: path,
                             reason: "the header says \(sealedCount) sealed bytes, the file holds \(reader.remaining)")
        }
        let sealedBytes = reader.remaining
        var payload = Array(bytes[payloadOffset...])
        defer { scrub(&payload) }
        do {
            try AESGCMContext(key: sealKey).open(prefixOf: &payload, count: sealedBytes - AESGCM.tagByteCount,
                                                 nonce: nonce, authenticating: Array(bytes[0..<headerCount]) + rootKeyID)
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw VaultError(.corrupt, subject: path, reason: "the host CA does not verify under this vault's root key", underlying: error)
        }
        let plaintextCount = sealedBytes - AESGCM.tagByteCount
        var plain = ByteReader(payload, to: plaintextCount, subject: "sealed host CA in \(path)")
        let keyCount = try plain.u32("key length")
        guard keyCount > 0, Int(keyCount) < plaintextCount - 4 else {
            throw VaultError(.corrupt, subject: path, reason: "the sealed host CA has a key length of \(keyCount) in \(plaintextCount) bytes")
        }
        let privateKey = SecretBytes(copying: try plain.take(count: keyCount, "private key"))
        let certificate = try plain.array(plain.remaining, "certificate")
        do {
            return try CertificateAuthority(privateKeyDER: privateKey, certificateDER: certificate)
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "the sealed host CA does not load", underlying: error)
        }
    }

    static func seal(_ ca: CertificateAuthority, sealKey: SecretBytes, rootKeyID: [UInt8]) throws -> [UInt8] {
        let keyCount = ca.privateKeyDER.count
        let plaintextCount = 4 + keyCount + ca.certificateDER.count
        let sealedCount = plaintextCount + AESGCM.tagByteCount
        guard payloadOffset + sealedCount <= maximumCount else {
            throw VaultError(.invalidArgument, subject: "host CA", reason: "a sealed host CA of \(sealedCount) bytes does not fit in \(maximumCount)")
        }
        // Built in one buffer of its final size and sealed in place, so the private key
        // is in ordinary memory only until the seal overwrites it.
        var payload: [UInt8] = []
        payload.reserveCapacity(sealedCount)
        payload += UInt32(keyCount).bigEndianBytes
        ca.privateKeyDER.withUnsafeBytes { payload.append(contentsOf: $0) }
        payload += ca.certificateDER
        payload += [UInt8](repeating: 0, count: AESGCM.tagByteCount)
        var writer = ByteWriter(capacity: payloadOffset + sealedCount)
        writer.raw(magic)
        writer.raw([version, 0, 0, 0])
        writer.u32(UInt32(sealedCount))
        let header = writer.bytes
        let nonce = try SecureRandom.bytes(count: AESGCM.nonceByteCount)
        do {
            try AESGCMContext(key: sealKey).seal(prefixOf: &payload, count: plaintextCount, nonce: nonce,
                                                 authenticating: header + rootKeyID)
        } catch {
            scrub(&payload)
            throw error
        }
        writer.raw(nonce)
        writer.raw(payload)
        scrub(&payload)
        return writer.bytes
    }

    /// Writes `ca.pem` (0644) unless it already holds exactly the CA's certificate.
    static func publishCertificate(_ ca: CertificateAuthority, at path: String) throws {
        let pem = Array(ca.certificatePEM.utf8)
        if FileSystem.exists(path), let current = try? FileSystem.readFile(path, limit: maximumCount), current == pem {
            return
        }
        do {
            try DurableFile.write(pem, to: path, mode: 0o644)
        } catch {
            throw VaultError.file(path, "could not write the host CA certificate", error)
        }
    }

    /// Overwrites a buffer that held key bytes (best effort: Swift arrays give no
    /// guarantee that no other copy was made).
    private static func scrub(_ buffer: inout [UInt8]) {
        buffer.withUnsafeMutableBytes { raw in
            _ = raw.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}
