public import GuestVaultCrypto
import GuestVaultSystem
#if canImport(Glibc)
import Glibc
#endif

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
        // Written under a private name, then linked into place: link never replaces, so
        // when two processes make a CA at once exactly one wins and the other loads it.
        let temporary = "\(path).new-\(hexString(try SecureRandom.bytes(count: 8)))"
        do {
            try FileSystem.writeAtomically(bytes, to: temporary)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not write the host CA: \(error)")
        }
        defer { try? FileSystem.removeFile(temporary) }
        do {
            try FileSystem.link(temporary, to: path)
        } catch let error as SystemError where error.errno == EEXIST {
            return try load(at: path, sealKey: sealKey, rootKeyID: rootKeyID)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not write the host CA: \(error)")
        }
        do {
            try FileSystem.syncDirectory(FileSystem.parentDirectory(of: path))
        } catch {
            throw VaultError(.io, subject: path, reason: "could not make the host CA durable: \(error)")
        }
        return ca
    }

    static func load(at path: String, sealKey: SecretBytes, rootKeyID: [UInt8]) throws -> CertificateAuthority {
        let bytes = try SecretFile.readPrivate(path, what: "host CA key", limit: maximumCount, sealed: true, tooLarge: .corrupt,
                                               missing: VaultError(.io, subject: path, reason: "could not read: no such file"))
        guard bytes.count >= payloadOffset + AESGCM.tagByteCount + 4,
              Array(bytes[0..<8]) == magic + [version, 0, 0, 0] else {
            throw VaultError(.corrupt, subject: path, reason: "not a host CA key file of version \(version)")
        }
        let sealedCount = bytes[8..<12].reduce(0) { $0 << 8 | Int($1) }
        guard sealedCount == bytes.count - payloadOffset else {
            throw VaultError(.corrupt, subject: path,
                             reason: "the header says \(sealedCount) sealed bytes, the file holds \(bytes.count - payloadOffset)")
        }
        var payload = Array(bytes[payloadOffset...])
        defer { scrub(&payload) }
        do {
            try AESGCMContext(key: sealKey).open(prefixOf: &payload, count: sealedCount - AESGCM.tagByteCount,
                                                 nonce: Array(bytes[headerCount..<payloadOffset]),
                                                 authenticating: Array(bytes[0..<headerCount]) + rootKeyID)
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw VaultError(.corrupt, subject: path, reason: "the host CA does not verify under this vault's root key")
        }
        let plaintextCount = sealedCount - AESGCM.tagByteCount
        let keyCount = payload[0..<4].reduce(0) { $0 << 8 | Int($1) }
        guard keyCount > 0, keyCount < plaintextCount - 4 else {
            throw VaultError(.corrupt, subject: path, reason: "the sealed host CA has a key length of \(keyCount) in \(plaintextCount) bytes")
        }
        let privateKey = SecretBytes(copying: payload[4..<(4 + keyCount)])
        let certificate = Array(payload[(4 + keyCount)..<plaintextCount])
        do {
            return try CertificateAuthority(privateKeyDER: privateKey, certificateDER: certificate)
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "the sealed host CA does not load: \(error)")
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
        payload += bigEndian32(keyCount)
        ca.privateKeyDER.withUnsafeBytes { payload.append(contentsOf: $0) }
        payload += ca.certificateDER
        payload += [UInt8](repeating: 0, count: AESGCM.tagByteCount)
        let header = magic + [version, 0, 0, 0] + bigEndian32(sealedCount)
        let nonce = try SecureRandom.bytes(count: AESGCM.nonceByteCount)
        do {
            try AESGCMContext(key: sealKey).seal(prefixOf: &payload, count: plaintextCount, nonce: nonce,
                                                 authenticating: header + rootKeyID)
        } catch {
            scrub(&payload)
            throw error
        }
        return header + nonce + payload
    }

    /// Writes `ca.pem` (0644) unless it already holds exactly the CA's certificate.
    static func publishCertificate(_ ca: CertificateAuthority, at path: String) throws {
        let pem = Array(ca.certificatePEM.utf8)
        if FileSystem.exists(path), let current = try? FileSystem.readFile(path, limit: maximumCount), current == pem {
            return
        }
        do {
            try FileSystem.writeAtomically(pem, to: path, mode: 0o644)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not write the host CA certificate: \(error)")
        }
    }

    private static func bigEndian32(_ value: Int) -> [UInt8] {
        [UInt8(value >> 24 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    /// Overwrites a buffer that held key bytes (best effort: Swift arrays give no
    /// guarantee that no other copy was made).
    private static func scrub(_ buffer: inout [UInt8]) {
        buffer.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { memset(base, 0, raw.count) }
        }
    }
}
