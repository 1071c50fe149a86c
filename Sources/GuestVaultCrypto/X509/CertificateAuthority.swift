import GuestVaultCore
internal import CLibCrypto

// The host CA that issues TPM endorsement key certificates, as `swtpm_setup
// --create-ek-cert` has swtpm-localca and swtpm_cert do, following the TCG EK Credential
// Profile for TPM Family 2.0.
//
// An EK certificate here holds:
//
//   version 3, a random positive serial of at most 20 octets (or the one asked for)
//   issuer       the CA's subject
//   subject      empty, or CN=<vm id> when the request names one (as swtpm-localca does)
//   public key   the EK: RSA (2048 or 3072 bits) or ECC NIST P-256 or P-384
//   subjectAltName, critical: one directoryName with the TPM manufacturer (2.23.133.2.1),
//                model (2.23.133.2.2) and version (2.23.133.2.3), UTF8Strings
//   basicConstraints, critical: CA:FALSE
//   subjectDirectoryAttributes: tcg-at-tpmSpecification (2.23.133.2.16), a SEQUENCE of
//                family (UTF8String), level and revision (INTEGER)
//   authorityKeyIdentifier: the CA's subject key identifier
//   keyUsage, critical: keyEncipherment (RSA) or keyAgreement (ECC)
//   extendedKeyUsage: tcg-kp-EKCertificate (2.23.133.8.1)
//   signature    ECDSA with SHA-256 by the CA's P-256 key
//
// The extensions have swtpm_cert's encodings, in the order its current source writes them
// (0.7.1 puts extendedKeyUsage first). Like swtpm, no certificatePolicies: the vault has
// no certification practice statement and no policy identifier of its own to name.

/// The public part of a TPM endorsement key, as the TPM reports it.
public enum EndorsementPublicKey: Sendable, Equatable {
    /// Big-endian modulus (256 bytes for RSA-2048, 384 for RSA-3072) and public
    /// exponent. An exponent of 0 (what the TPM reports for the default) means 65537.
    case rsa(modulus: [UInt8], exponent: UInt32)
    /// The point's big-endian coordinates, 32 bytes each (shorter ones are taken as
    /// having lost leading zeros and are padded back, as swtpm_cert does).
    case eccP256(x: [UInt8], y: [UInt8])
    /// The point's big-endian coordinates, 48 bytes each (padded back likewise): the
    /// ECC EK swtpm_setup 0.7.1 makes.
    case eccP384(x: [UInt8], y: [UInt8])
}

/// What goes into a platform certificate besides the key, as swtpm_cert `--type platform`
/// makes it for a TPM 2.0: an X.509 certificate (not a TCG attribute certificate) for the
/// platform's RSA EK, with the platform manufacturer (2.23.133.5.1.1), model
/// (2.23.133.5.1.4) and version (2.23.133.5.1.5) in a critical subjectAltName,
/// basicConstraints CA:FALSE, the authorityKeyIdentifier, keyUsage keyEncipherment and
/// extendedKeyUsage tcg-kp-PlatformCertificate (2.23.133.8.2).
public struct PlatformCertificateRequest: Sendable {
    public var publicKey: EndorsementPublicKey
    public var platformManufacturer: String = "GuestVault"
    public var platformModel: String = "QEMU"
    public var platformVersion: String = "1"
    /// When set, the subject is `CN=<vmID>` (at most 64 characters); otherwise empty.
    public var vmID: String?
    /// Days from now until the certificate expires (1 to 36,500).
    public var validityDays: Int = 3650

    public init(publicKey: EndorsementPublicKey, vmID: String? = nil) {
        self.publicKey = publicKey
        self.vmID = vmID
    }
}

/// What goes into one EK certificate besides the key. The defaults are what swtpm
/// reports for libtpms 0.9 (`TPMLIB_GetInfo`), except the model.
public struct EKCertificateRequest: Sendable {
    public var publicKey: EndorsementPublicKey
    /// tcg-at-tpmManufacturer: "id:" and the TPM_PT_MANUFACTURER value in hex.
    public var tpmManufacturer: String = "id:00001014"
    /// tcg-at-tpmModel.
    public var tpmModel: String = "swtpm-libtpms"
    /// tcg-at-tpmVersion: "id:" and the firmware version in hex.
    public var tpmVersion: String = "id:20191023"
    /// tcg-at-tpmSpecification: the TPM library specification the TPM implements.
    public var tpmSpecFamily: String = "2.0"
    public var tpmSpecLevel: UInt32 = 0
    public var tpmSpecRevision: UInt32 = 164
    /// When set, the subject is `CN=<vmID>` (at most 64 characters); otherwise empty.
    public var vmID: String?
    /// The serial number, big-endian, at most 20 octets once encoded; random if nil.
    public var serial: [UInt8]?
    /// Days from now until the certificate expires (1 to 36,500).
    public var validityDays: Int = 3650

    public init(publicKey: EndorsementPublicKey, vmID: String? = nil, serial: [UInt8]? = nil) {
        self.publicKey = publicKey
        self.vmID = vmID
        self.serial = serial
    }
}

/// A certificate authority with an ECDSA P-256 key that issues EK certificates.
///
/// It keeps its private key as PKCS#8 DER in ``SecretBytes`` and its certificate as the
/// exact DER it was made or loaded with. OpenSSL objects live only for the length of
/// one call, so the value is immutable and shared freely between threads.
public final class CertificateAuthority: Sendable, CustomStringConvertible {
    /// The CA certificate, DER.
    public let certificateDER: [UInt8]
    /// The CA's private key, PKCS#8 (PrivateKeyInfo) DER, for sealing at rest.
    public let privateKeyDER: SecretBytes

    /// Days a generated CA certificate is valid for.
    public static let caValidityDays = 3650

    /// A new CA: a fresh P-256 key and a self-signed certificate for `CN=commonName`
    /// (basicConstraints CA:TRUE and keyUsage keyCertSign, cRLSign, both critical; a
    /// subjectKeyIdentifier), valid for ten years from now.
    public static func generate(commonName: String) throws -> CertificateAuthority {
        let operation = "host CA generation"
        OpenSSL.clearErrors()
        try CertificatePlumbing.checkText(commonName, "common name", maximum: 64, operation)
        let key = try CertificatePlumbing.generateP256Key(operation)
        defer { EVP_PKEY_free(key) }
        guard let cert = X509_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "X509_new failed")
        }
        defer { X509_free(cert) }
        try OpenSSL.check(X509_set_version(cert, 2), operation, "X509_set_version")
        try CertificatePlumbing.setSerial(cert, CertificatePlumbing.randomSerial(), operation)
        let name = try CertificatePlumbing.commonNameName(commonName, operation)
        defer { X509_NAME_free(name) }
        try OpenSSL.check(X509_set_subject_name(cert, name), operation, "X509_set_subject_name")
        try OpenSSL.check(X509_set_issuer_name(cert, name), operation, "X509_set_issuer_name")
        try CertificatePlumbing.setValidity(cert, days: caValidityDays, operation)
        try OpenSSL.check(X509_set_pubkey(cert, key), operation, "X509_set_pubkey")
        try CertificatePlumbing.addExtension(cert, NID_basic_constraints, "critical,CA:TRUE", issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_key_usage, "critical,keyCertSign,cRLSign", issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_subject_key_identifier, "hash", issuer: cert, operation)
        try CertificatePlumbing.sign(cert, key, operation)
        let certificate = try CertificatePlumbing.encode(cert, operation)
        let privateKey = try CertificatePlumbing.encodePrivateKey(key, operation)
        return try CertificateAuthority(privateKeyDER: privateKey, certificateDER: certificate)
    }

    /// A CA from its PKCS#8 DER private key (ECDSA P-256) and its DER certificate.
    /// Throws ``CryptoError/Code/invalidInput`` unless both parse with no trailing bytes,
    /// the key is the certificate's, and the certificate is a CA certificate allowed to
    /// sign certificates that has a subjectKeyIdentifier.
    public init(privateKeyDER: SecretBytes, certificateDER: [UInt8]) throws {
        let operation = "host CA load"
        OpenSSL.clearErrors()
        let cert = try CertificatePlumbing.parseCertificate(certificateDER, operation)
        defer { X509_free(cert) }
        let key = try CertificatePlumbing.parsePrivateKey(privateKeyDER, operation)
        defer { EVP_PKEY_free(key) }
        guard X509_check_private_key(cert, key) == 1 else {
            throw OpenSSL.error(.invalidInput, operation, "the private key does not belong to the certificate")
        }
        guard X509_check_ca(cert) >= 1, X509_get_key_usage(cert) & UInt32(KU_KEY_CERT_SIGN) != 0 else {
            throw OpenSSL.error(.invalidInput, operation, "the certificate is not a CA certificate allowed to sign certificates")
        }
        guard X509_get0_subject_key_id(cert) != nil else {
            throw OpenSSL.error(.invalidInput, operation, "the CA certificate has no subjectKeyIdentifier")
        }
        OpenSSL.clearErrors()
        self.certificateDER = certificateDER
        self.privateKeyDER = privateKeyDER
    }

    /// The CA certificate in PEM, for users to check EK certificates against.
    public var certificatePEM: String {
        CertificatePlumbing.pem(certificateDER, label: "CERTIFICATE")
    }

    public var description: String {
        "CertificateAuthority(certificate: \(certificateDER.count) bytes, private key: redacted)"
    }

    /// Issues an EK certificate (DER) for `request`, signed with ECDSA-SHA256.
    ///
    /// Throws ``CryptoError/Code/invalidPublicKey`` if the key is malformed (a modulus
    /// of another size or without its top bit, a point not on P-256, empty coordinates)
    /// and ``CryptoError/Code/invalidInput`` for a bad serial, validity or attribute.
    public func issueEKCertificate(_ request: EKCertificateRequest) throws -> [UInt8] {
        let operation = "EK certificate issue"
        OpenSSL.clearErrors()
        try CertificatePlumbing.checkText(request.tpmManufacturer, "TPM manufacturer", maximum: 128, operation)
        try CertificatePlumbing.checkText(request.tpmModel, "TPM model", maximum: 128, operation)
        try CertificatePlumbing.checkText(request.tpmVersion, "TPM version", maximum: 128, operation)
        try CertificatePlumbing.checkText(request.tpmSpecFamily, "TPM specification family", maximum: 16, operation)
        if let vmID = request.vmID { try CertificatePlumbing.checkText(vmID, "VM id", maximum: 64, operation) }
        guard (1...36_500).contains(request.validityDays) else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "validity of \(request.validityDays) days; give 1 to 36500")
        }
        let serial = try request.serial.map { try CertificatePlumbing.checkSerial($0, operation) } ?? CertificatePlumbing.randomSerial()

        let endorsementKey = try CertificatePlumbing.endorsementKey(request.publicKey, operation)
        defer { EVP_PKEY_free(endorsementKey) }
        let caCert = try CertificatePlumbing.parseCertificate(certificateDER, operation)
        defer { X509_free(caCert) }
        let caKey = try CertificatePlumbing.parsePrivateKey(privateKeyDER, operation)
        defer { EVP_PKEY_free(caKey) }

        let cert = try CertificatePlumbing.newCertificate(issuer: caCert, serial: serial, days: request.validityDays,
                                                          commonName: request.vmID, publicKey: endorsementKey, operation)
        defer { X509_free(cert) }

        let isECC: Bool
        if case .rsa = request.publicKey { isECC = false } else { isECC = true }
        try CertificatePlumbing.addExtension(cert, NID_subject_alt_name, critical: true,
                                   value: TCGExtensions.subjectAltName(manufacturer: request.tpmManufacturer,
                                                             model: request.tpmModel, version: request.tpmVersion),
                                   operation)
        try CertificatePlumbing.addExtension(cert, NID_basic_constraints, "critical,CA:FALSE", issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_subject_directory_attributes, critical: false,
                                   value: TCGExtensions.specificationAttributes(family: request.tpmSpecFamily,
                                                                      level: request.tpmSpecLevel,
                                                                      revision: request.tpmSpecRevision),
                                   operation)
        try CertificatePlumbing.addExtension(cert, NID_authority_key_identifier, "keyid:always", issuer: caCert, operation)
        try CertificatePlumbing.addExtension(cert, NID_key_usage, isECC ? "critical,keyAgreement" : "critical,keyEncipherment",
                                   issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_ext_key_usage, critical: false, value: TCGExtensions.ekCertificateKeyPurpose, operation)
        try CertificatePlumbing.sign(cert, caKey, operation)
        return try CertificatePlumbing.encode(cert, operation)
    }
}

extension CertificateAuthority {
    /// Issues a platform certificate (DER) for `request`, signed with ECDSA-SHA256 (see
    /// ``PlatformCertificateRequest``). Throws as ``issueEKCertificate(_:)`` does.
    public func issuePlatformCertificate(_ request: PlatformCertificateRequest) throws -> [UInt8] {
        let operation = "platform certificate issue"
        OpenSSL.clearErrors()
        try CertificatePlumbing.checkText(request.platformManufacturer, "platform manufacturer", maximum: 128, operation)
        try CertificatePlumbing.checkText(request.platformModel, "platform model", maximum: 128, operation)
        try CertificatePlumbing.checkText(request.platformVersion, "platform version", maximum: 128, operation)
        if let vmID = request.vmID { try CertificatePlumbing.checkText(vmID, "VM id", maximum: 64, operation) }
        guard (1...36_500).contains(request.validityDays) else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "validity of \(request.validityDays) days; give 1 to 36500")
        }
        let endorsementKey = try CertificatePlumbing.endorsementKey(request.publicKey, operation)
        defer { EVP_PKEY_free(endorsementKey) }
        let caCert = try CertificatePlumbing.parseCertificate(certificateDER, operation)
        defer { X509_free(caCert) }
        let caKey = try CertificatePlumbing.parsePrivateKey(privateKeyDER, operation)
        defer { EVP_PKEY_free(caKey) }
        let cert = try CertificatePlumbing.newCertificate(issuer: caCert, serial: CertificatePlumbing.randomSerial(),
                                                          days: request.validityDays, commonName: request.vmID,
                                                          publicKey: endorsementKey, operation)
        defer { X509_free(cert) }
        let isECC: Bool
        if case .rsa = request.publicKey { isECC = false } else { isECC = true }
        try CertificatePlumbing.addExtension(cert, NID_subject_alt_name, critical: true,
                                             value: TCGExtensions.platformAltName(manufacturer: request.platformManufacturer,
                                                                                  model: request.platformModel,
                                                                                  version: request.platformVersion),
                                             operation)
        try CertificatePlumbing.addExtension(cert, NID_basic_constraints, "critical,CA:FALSE", issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_authority_key_identifier, "keyid:always", issuer: caCert, operation)
        try CertificatePlumbing.addExtension(cert, NID_key_usage, isECC ? "critical,keyAgreement" : "critical,keyEncipherment",
                                             issuer: nil, operation)
        try CertificatePlumbing.addExtension(cert, NID_ext_key_usage, critical: false, value: TCGExtensions.platformCertificateKeyPurpose, operation)
        try CertificatePlumbing.sign(cert, caKey, operation)
        return try CertificatePlumbing.encode(cert, operation)
    }
}

// MARK: - TCG structures (DER)

/// The TCG-defined extension values, encoded here because OpenSSL 3.0 has no type for
/// them. Their ASN.1 is in swtpm's `src/swtpm_cert/tpm.asn` and the EK Credential Profile.
private enum TCGExtensions {
    static let tpmManufacturer: [UInt32] = [2, 23, 133, 2, 1]
    static let tpmModel: [UInt32] = [2, 23, 133, 2, 2]
    static let tpmVersion: [UInt32] = [2, 23, 133, 2, 3]
    static let tpmSpecification: [UInt32] = [2, 23, 133, 2, 16]
    static let ekCertificate: [UInt32] = [2, 23, 133, 8, 1]
    static let platformCertificate: [UInt32] = [2, 23, 133, 8, 2]
    static let platformManufacturer: [UInt32] = [2, 23, 133, 5, 1, 1]
    static let platformModel: [UInt32] = [2, 23, 133, 5, 1, 4]
    static let platformVersion: [UInt32] = [2, 23, 133, 5, 1, 5]

    /// GeneralNames with one directoryName of the platform manufacturer, model and
    /// version (the TPM 2.0 OIDs swtpm_cert uses), one RDN each, UTF8Strings.
    static func platformAltName(manufacturer: String, model: String, version: String) -> [UInt8] {
        func rdn(_ oid: [UInt32], _ value: String) -> [UInt8] {
            MinimalDER.set(MinimalDER.sequence(MinimalDER.oid(oid) + MinimalDER.utf8(value)))
        }
        let name = MinimalDER.sequence(rdn(platformManufacturer, manufacturer) + rdn(platformModel, model) + rdn(platformVersion, version))
        return MinimalDER.sequence(MinimalDER.tlv(0xA4, name))
    }

    /// ExtKeyUsageSyntax with tcg-kp-PlatformCertificate.
    static var platformCertificateKeyPurpose: [UInt8] { MinimalDER.sequence(MinimalDER.oid(platformCertificate)) }

    /// GeneralNames holding one directoryName ([4], explicit since Name is a CHOICE)
    /// whose three RDNs are the manufacturer, model and version, one attribute each.
    static func subjectAltName(manufacturer: String, model: String, version: String) -> [UInt8] {
        func rdn(_ oid: [UInt32], _ value: String) -> [UInt8] {
            MinimalDER.set(MinimalDER.sequence(MinimalDER.oid(oid) + MinimalDER.utf8(value)))
        }
        let name = MinimalDER.sequence(rdn(tpmManufacturer, manufacturer) + rdn(tpmModel, model) + rdn(tpmVersion, version))
        return MinimalDER.sequence(MinimalDER.tlv(0xA4, name))
    }

    /// SubjectDirectoryAttributes with one Attribute, tcg-at-tpmSpecification, whose
    /// single value is TPMSpecification ::= SEQUENCE { family UTF8String, level INTEGER,
    /// revision INTEGER }.
    static func specificationAttributes(family: String, level: UInt32, revision: UInt32) -> [UInt8] {
        let specification = MinimalDER.sequence(MinimalDER.utf8(family) + MinimalDER.integer(level) + MinimalDER.integer(revision))
        return MinimalDER.sequence(MinimalDER.sequence(MinimalDER.oid(tpmSpecification) + MinimalDER.set(specification)))
    }

    /// ExtKeyUsageSyntax with tcg-kp-EKCertificate.
    static var ekCertificateKeyPurpose: [UInt8] { MinimalDER.sequence(MinimalDER.oid(ekCertificate)) }
}

/// The few DER encodings the TCG structures need. Definite lengths, minimal integers.
private enum MinimalDER {
    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [tag]
        let count = content.count
        if count < 0x80 {
            out.append(UInt8(count))
        } else {
            var length: [UInt8] = []
            var rest = count
            while rest > 0 {
                length.insert(UInt8(rest & 0xff), at: 0)
                rest >>= 8
            }
            out.append(0x80 | UInt8(length.count))
            out += length
        }
        return out + content
    }

    static func sequence(_ content: [UInt8]) -> [UInt8] { tlv(0x30, content) }
    static func set(_ content: [UInt8]) -> [UInt8] { tlv(0x31, content) }
    static func utf8(_ text: String) -> [UInt8] { tlv(0x0C, Array(text.utf8)) }

    /// A non-negative INTEGER in the fewest octets (a leading zero only for the sign).
    static func integer(_ value: UInt32) -> [UInt8] {
        var bytes = value.bigEndianBytes
        while bytes.count > 1, bytes[0] == 0 { bytes.removeFirst() }
        if bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return tlv(0x02, bytes)
    }

    /// An OBJECT IDENTIFIER from its arcs (the first two at most 2 and 39).
    static func oid(_ arcs: [UInt32]) -> [UInt8] {
        precondition(arcs.count >= 2 && arcs[0] <= 2 && arcs[1] < 40)
        var content: [UInt8] = []
        for arc in [arcs[0] * 40 + arcs[1]] + arcs.dropFirst(2) {
            var group: [UInt8] = [UInt8(arc & 0x7f)]
            var rest = arc >> 7
            while rest > 0 {
                group.insert(UInt8(rest & 0x7f) | 0x80, at: 0)
                rest >>= 7
            }
            content += group
        }
        return tlv(0x06, content)
    }
}

// MARK: - OpenSSL X.509 plumbing

/// Stable C strings for the names OpenSSL keeps pointers to (see ``CName``).
private enum CertificateCName {
    static let rsa = CName("RSA")
    static let ec = CName("EC")
    static let rsaN = CName("n")
    static let rsaE = CName("e")
    static let group = CName("group")
    static let publicKey = CName("pub")
    static let p256 = CName("P-256")
    static let p384 = CName("P-384")
    // OpenSSL 3.0's encoder and decoder contexts keep these pointers, not copies.
    static let der = CName("DER")
    static let privateKeyInfo = CName("PrivateKeyInfo")
}

/// Every OpenSSL call the CA makes, each object freed before its function returns.
private enum CertificatePlumbing {
    /// EVP_PKEY_PUBLIC_KEY (a macro Swift does not import): all parameters and the
    /// public key.
    static let selectPublicKey = Int32(OSSL_KEYMGMT_SELECT_ALL_PARAMETERS | OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
    /// EVP_PKEY_KEYPAIR: the above and the private key.
    static let selectKeyPair = selectPublicKey | Int32(OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
    /// A CA certificate or key larger than this is not one we made.
    static let maximumInput = 64 * 1024

    static func checkText(_ text: String, _ what: String, maximum: Int, _ operation: String) throws {
        let count = text.utf8.count
        guard count > 0, count <= maximum, !text.utf8.contains(0) else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "the \(what) is \(count) bytes of UTF-8; give 1 to \(maximum), no NUL")
        }
    }

    // MARK: Keys

    static func generateP256Key(_ operation: String) throws -> OpaquePointer {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, CertificateCName.ec.pointer, nil) else {
            throw OpenSSL.error(.algorithmUnavailable, operation, "OpenSSL's default provider has no EC keys")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        try OpenSSL.check(EVP_PKEY_keygen_init(ctx), operation, "EVP_PKEY_keygen_init")
        try OpenSSL.check(EVP_PKEY_CTX_set_group_name(ctx, CertificateCName.p256.pointer), operation, "EVP_PKEY_CTX_set_group_name(P-256)")
        var key: OpaquePointer?
        guard EVP_PKEY_generate(ctx, &key) == 1, let key else {
            throw OpenSSL.error(.randomFailure, operation, "EVP_PKEY_generate failed for a P-256 key")
        }
        return key
    }

    /// PKCS#8 PrivateKeyInfo DER, written by OpenSSL's encoder straight into secret storage.
    static func encodePrivateKey(_ key: OpaquePointer, _ operation: String) throws -> SecretBytes {
        guard let ctx = OSSL_ENCODER_CTX_new_for_pkey(key, selectKeyPair, CertificateCName.der.pointer,
                                                      CertificateCName.privateKeyInfo.pointer, nil),
              OSSL_ENCODER_CTX_get_num_encoders(ctx) > 0 else {
            throw OpenSSL.error(.algorithmUnavailable, operation, "OpenSSL has no PKCS#8 DER encoder for the key")
        }
        defer { OSSL_ENCODER_CTX_free(ctx) }
        return try SecretBytes(unsafeUninitializedCapacity: 1024) { buffer, count in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var remaining = buffer.count
            try OpenSSL.check(OSSL_ENCODER_to_data(ctx, &cursor, &remaining), operation, "OSSL_ENCODER_to_data(PrivateKeyInfo)")
            count = buffer.count - remaining
        }
    }

    /// An ECDSA P-256 key from PKCS#8 PrivateKeyInfo DER, refusing trailing bytes and
    /// any other kind of key.
    static func parsePrivateKey(_ der: SecretBytes, _ operation: String) throws -> OpaquePointer {
        guard der.count > 0, der.count <= maximumInput else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "the private key is \(der.count) bytes; expected PKCS#8 DER of a P-256 key")
        }
        var key: OpaquePointer?
        guard let ctx = OSSL_DECODER_CTX_new_for_pkey(&key, CertificateCName.der.pointer, CertificateCName.privateKeyInfo.pointer,
                                                      CertificateCName.ec.pointer, selectKeyPair, nil, nil) else {
            throw OpenSSL.error(.algorithmUnavailable, operation, "OpenSSL has no PKCS#8 DER decoder for EC keys")
        }
        defer { OSSL_DECODER_CTX_free(ctx) }
        let decoded = der.withUnsafeBytes { raw -> Bool in
            var cursor: UnsafePointer<UInt8>? = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var remaining = raw.count
            return OSSL_DECODER_from_data(ctx, &cursor, &remaining) == 1 && remaining == 0
        }
        guard decoded, let key else {
            EVP_PKEY_free(key)
            throw OpenSSL.error(.invalidInput, operation, "the private key is not PKCS#8 DER of an EC key")
        }
        var group = [CChar](repeating: 0, count: 64)
        var groupLength = 0
        let named = EVP_PKEY_get_group_name(key, &group, group.count, &groupLength) == 1
        let groupName = named ? String(decoding: group.prefix(groupLength).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        guard ["prime256v1", "P-256", "secp256r1"].contains(groupName) else {
            EVP_PKEY_free(key)
            throw OpenSSL.error(.invalidInput, operation, "the private key is on curve \"\(groupName)\", not P-256")
        }
        OpenSSL.clearErrors()
        return key
    }

    /// The EK's public key, built with EVP_PKEY_fromdata and checked in full
    /// (EVP_PKEY_public_check: SP 800-56B for RSA, on the curve and of the group's order
    /// for ECC).
    static func endorsementKey(_ publicKey: EndorsementPublicKey, _ operation: String) throws -> OpaquePointer {
        switch publicKey {
        case .rsa(let modulus, let exponent):
            guard modulus.count == 256 || modulus.count == 384 else {
                throw CryptoError(.invalidPublicKey, operation: operation,
                                  reason: "RSA modulus is \(modulus.count) bytes; an EK has 256 (RSA-2048) or 384 (RSA-3072)")
            }
            guard modulus[0] & 0x80 != 0 else {
                throw CryptoError(.invalidPublicKey, operation: operation,
                                  reason: "RSA modulus of \(modulus.count) bytes does not have its top bit set, so it has fewer than \(modulus.count * 8) bits")
            }
            let e = exponent == 0 ? 65537 : exponent
            guard let n = modulus.withUnsafeBufferPointer({ BN_bin2bn($0.baseAddress, Int32($0.count), nil) }),
                  let eBN = BN_new() else {
                throw OpenSSL.error(.libraryFailure, operation, "BN_bin2bn failed")
            }
            defer {
                BN_free(n)
                BN_free(eBN)
            }
            try OpenSSL.check(BN_set_word(eBN, UInt(e)), operation, "BN_set_word")
            return try publicKeyFromData(CertificateCName.rsa, "RSA", operation) { builder in
                OSSL_PARAM_BLD_push_BN(builder, CertificateCName.rsaN.pointer, n) == 1
                    && OSSL_PARAM_BLD_push_BN(builder, CertificateCName.rsaE.pointer, eBN) == 1
            }
        case .eccP256(let x, let y):
            return try eccPublicKey(x: x, y, size: 32, curve: CertificateCName.p256, "ECC P-256", operation)
        case .eccP384(let x, let y):
            return try eccPublicKey(x: x, y, size: 48, curve: CertificateCName.p384, "ECC P-384", operation)
        }
    }

    /// An uncompressed point on `curve` from coordinates of 1 to `size` bytes each
    /// (left-padded with zeros, as a TPM may drop leading zero bytes).
    private static func eccPublicKey(x: [UInt8], _ y: [UInt8], size: Int, curve: CName, _ what: String,
                                     _ operation: String) throws -> OpaquePointer {
        guard (1...size).contains(x.count), (1...size).contains(y.count) else {
            throw CryptoError(.invalidPublicKey, operation: operation,
                              reason: "\(what) coordinates are \(x.count) and \(y.count) bytes; expected 1 to \(size) each")
        }
        let point: [UInt8] = [0x04] + [UInt8](repeating: 0, count: size - x.count) + x
            + [UInt8](repeating: 0, count: size - y.count) + y
        return try point.withUnsafeBufferPointer { encoded in
            try publicKeyFromData(CertificateCName.ec, what, operation) { builder in
                OSSL_PARAM_BLD_push_utf8_string(builder, CertificateCName.group.pointer, curve.pointer, 0) == 1
                    && OSSL_PARAM_BLD_push_octet_string(builder, CertificateCName.publicKey.pointer, encoded.baseAddress, encoded.count) == 1
            }
        }
    }

    /// Runs `push` on a parameter builder, then makes and checks a public key from the
    /// parameters. Whatever `push` hands the builder must stay alive through this call.
    private static func publicKeyFromData(
        _ type: CName, _ what: String, _ operation: String, push: (OpaquePointer) -> Bool
    ) throws -> OpaquePointer {
        guard let builder = OSSL_PARAM_BLD_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "OSSL_PARAM_BLD_new failed")
        }
        defer { OSSL_PARAM_BLD_free(builder) }
        guard push(builder), let params = OSSL_PARAM_BLD_to_param(builder) else {
            throw OpenSSL.error(.libraryFailure, operation, "could not build the \(what) key parameters")
        }
        defer { OSSL_PARAM_free(params) }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, type.pointer, nil) else {
            throw OpenSSL.error(.algorithmUnavailable, operation, "OpenSSL's default provider has no \(what) keys")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        try OpenSSL.check(EVP_PKEY_fromdata_init(ctx), operation, "EVP_PKEY_fromdata_init")
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata(ctx, &key, selectPublicKey, params) == 1, let key else {
            throw OpenSSL.error(.invalidPublicKey, operation, "OpenSSL refused the \(what) public key")
        }
        guard let check = EVP_PKEY_CTX_new_from_pkey(nil, key, nil) else {
            EVP_PKEY_free(key)
            throw OpenSSL.error(.libraryFailure, operation, "EVP_PKEY_CTX_new_from_pkey failed")
        }
        defer { EVP_PKEY_CTX_free(check) }
        guard EVP_PKEY_public_check(check) == 1 else {
            EVP_PKEY_free(key)
            throw OpenSSL.error(.invalidPublicKey, operation, "the \(what) public key fails OpenSSL's public key check")
        }
        return key
    }

    // MARK: Certificates

    static func parseCertificate(_ der: [UInt8], _ operation: String) throws -> OpaquePointer {
        guard !der.isEmpty, der.count <= maximumInput else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "the certificate is \(der.count) bytes; expected DER of at most \(maximumInput)")
        }
        let parsed = der.withUnsafeBufferPointer { buffer -> (OpaquePointer?, Int) in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            let cert = d2i_X509(nil, &cursor, buffer.count)
            return (cert, cursor.map { $0 - buffer.baseAddress! } ?? 0)
        }
        guard let cert = parsed.0 else {
            throw OpenSSL.error(.invalidInput, operation, "the certificate is not DER X.509")
        }
        guard parsed.1 == der.count else {
            X509_free(cert)
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "\(der.count - parsed.1) bytes follow the DER certificate")
        }
        return cert
    }

    static func encode(_ cert: OpaquePointer, _ operation: String) throws -> [UInt8] {
        let length = i2d_X509(cert, nil)
        guard length > 0 else {
            throw OpenSSL.error(.libraryFailure, operation, "i2d_X509 returned \(length)")
        }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_X509(cert, &cursor)
        }
        guard written == length else {
            throw OpenSSL.error(.libraryFailure, operation, "i2d_X509 wrote \(written) bytes, expected \(length)")
        }
        return out
    }

    static func sign(_ cert: OpaquePointer, _ key: OpaquePointer, _ operation: String) throws {
        let sha256 = try Algorithms.require(Algorithms.shared.sha256, "SHA2-256", operation)
        guard X509_sign(cert, key, sha256) > 0 else {
            throw OpenSSL.error(.libraryFailure, operation, "X509_sign (ECDSA-SHA256) failed")
        }
    }

    /// 20 random octets with the top bit clear: positive, and at most 20 octets in DER.
    static func randomSerial() throws -> [UInt8] {
        var serial = try SecureRandom.bytes(count: 20)
        serial[0] &= 0x7f
        if serial.allSatisfy({ $0 == 0 }) { serial[19] = 1 }
        return serial
    }

    /// A given serial: positive, non-zero, at most 20 octets as a DER INTEGER.
    static func checkSerial(_ serial: [UInt8], _ operation: String) throws -> [UInt8] {
        let significant = Array(serial.drop { $0 == 0 })
        guard !significant.isEmpty, significant.count < 20 || (significant.count == 20 && significant[0] & 0x80 == 0) else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "serial number of \(serial.count) bytes must be non-zero and below 2^159 (at most 20 octets in DER)")
        }
        return significant
    }

    /// A new X.509 v3 certificate issued by `issuer`: serial, validity from now, subject
    /// CN = `commonName` (none when nil) and `publicKey`; the caller adds the extensions,
    /// signs it and frees it.
    static func newCertificate(issuer: OpaquePointer, serial: [UInt8], days: Int, commonName: String?,
                               publicKey: OpaquePointer, _ operation: String) throws -> OpaquePointer {
        guard let cert = X509_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "X509_new failed")
        }
        do {
            try OpenSSL.check(X509_set_version(cert, 2), operation, "X509_set_version")
            try setSerial(cert, serial, operation)
            try OpenSSL.check(X509_set_issuer_name(cert, X509_get_subject_name(issuer)), operation, "X509_set_issuer_name")
            try setValidity(cert, days: days, operation)
            if let commonName {
                let name = try commonNameName(commonName, operation)
                defer { X509_NAME_free(name) }
                try OpenSSL.check(X509_set_subject_name(cert, name), operation, "X509_set_subject_name")
            }
            try OpenSSL.check(X509_set_pubkey(cert, publicKey), operation, "X509_set_pubkey")
        } catch {
            X509_free(cert)
            throw error
        }
        return cert
    }

    static func setSerial(_ cert: OpaquePointer, _ serial: [UInt8], _ operation: String) throws {
        guard let number = serial.withUnsafeBufferPointer({ BN_bin2bn($0.baseAddress, Int32($0.count), nil) }) else {
            throw OpenSSL.error(.libraryFailure, operation, "BN_bin2bn failed")
        }
        defer { BN_free(number) }
        guard let integer = BN_to_ASN1_INTEGER(number, nil) else {
            throw OpenSSL.error(.libraryFailure, operation, "BN_to_ASN1_INTEGER failed")
        }
        defer { ASN1_INTEGER_free(integer) }
        try OpenSSL.check(X509_set_serialNumber(cert, integer), operation, "X509_set_serialNumber")
    }

    /// notBefore now, notAfter `days` later (GeneralizedTime from 2050 on, as RFC 5280 says).
    static func setValidity(_ cert: OpaquePointer, days: Int, _ operation: String) throws {
        guard X509_gmtime_adj(X509_getm_notBefore(cert), 0) != nil,
              X509_time_adj_ex(X509_getm_notAfter(cert), Int32(days), 0, nil) != nil else {
            throw OpenSSL.error(.libraryFailure, operation, "could not set the validity period")
        }
    }

    /// A name with one RDN, CN=`commonName`, as a UTF8String.
    static func commonNameName(_ commonName: String, _ operation: String) throws -> OpaquePointer {
        guard let name = X509_NAME_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "X509_NAME_new failed")
        }
        let bytes = Array(commonName.utf8)
        let added = bytes.withUnsafeBufferPointer {
            X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING, $0.baseAddress, Int32($0.count), -1, 0)
        }
        guard added == 1 else {
            X509_NAME_free(name)
            throw OpenSSL.error(.invalidInput, operation, "OpenSSL refused the common name")
        }
        return name
    }

    /// Adds a standard extension from OpenSSL's configuration syntax ("critical,CA:FALSE").
    /// `issuer` is the certificate an authorityKeyIdentifier is taken from; for a
    /// subjectKeyIdentifier ("hash") pass the certificate itself.
    static func addExtension(
        _ cert: OpaquePointer, _ nid: Int32, _ value: String, issuer: OpaquePointer?, _ operation: String
    ) throws {
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuer, cert, nil, nil, 0)
        guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
            throw OpenSSL.error(.libraryFailure, operation, "could not make extension \(nid) from \"\(value)\"")
        }
        defer { X509_EXTENSION_free(ext) }
        try OpenSSL.check(X509_add_ext(cert, ext, -1), operation, "X509_add_ext(\(nid))")
    }

    /// Adds an extension whose value is given as DER.
    static func addExtension(
        _ cert: OpaquePointer, _ nid: Int32, critical: Bool, value: [UInt8], _ operation: String
    ) throws {
        guard let octets = ASN1_OCTET_STRING_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "ASN1_OCTET_STRING_new failed")
        }
        defer { ASN1_OCTET_STRING_free(octets) }
        try OpenSSL.check(value.withUnsafeBufferPointer { ASN1_OCTET_STRING_set(octets, $0.baseAddress, Int32($0.count)) },
                          operation, "ASN1_OCTET_STRING_set")
        guard let ext = X509_EXTENSION_create_by_NID(nil, nid, critical ? 1 : 0, octets) else {
            throw OpenSSL.error(.libraryFailure, operation, "X509_EXTENSION_create_by_NID(\(nid)) failed")
        }
        defer { X509_EXTENSION_free(ext) }
        try OpenSSL.check(X509_add_ext(cert, ext, -1), operation, "X509_add_ext(\(nid))")
    }

    /// PEM: base64 in 64-character lines between BEGIN and END lines.
    static func pem(_ der: [UInt8], label: String) -> String {
        var encoded = [UInt8](repeating: 0, count: (der.count + 2) / 3 * 4 + 1)
        let count = encoded.withUnsafeMutableBufferPointer { out in
            der.withUnsafeBufferPointer { EVP_EncodeBlock(out.baseAddress, $0.baseAddress, Int32($0.count)) }
        }
        let base64 = encoded.prefix(Int(max(count, 0)))
        var text = "-----BEGIN \(label)-----\n"
        var start = base64.startIndex
        while start < base64.endIndex {
            let end = base64.index(start, offsetBy: 64, limitedBy: base64.endIndex) ?? base64.endIndex
            text += String(decoding: base64[start..<end], as: UTF8.self) + "\n"
            start = end
        }
        return text + "-----END \(label)-----\n"
    }
}
