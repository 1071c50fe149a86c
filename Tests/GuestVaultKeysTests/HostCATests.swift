import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import Testing

/// The host CA and its EK certificates, checked with the real `openssl` command (and
/// against swtpm's own `swtpm_cert` where it is installed).
@Suite struct HostCATests {
    // MARK: EK certificates, as OpenSSL sees them

    @Test(arguments: [EKKind.rsa, .ecc])
    func issuesAnEKCertificateThatOpenSSLVerifiesStrictly(_ kind: EKKind) throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA test")
        let ek = try TestEK(kind, in: dir)
        var request = EKCertificateRequest(publicKey: ek.publicKey)
        request.serial = [0x01, 0x02, 0x03, 0x04, 0x05]
        let der = try ca.issueEKCertificate(request)
        let caPath = try write(ca.certificatePEM, to: dir.file("ca.pem"))
        let ekPath = try write(pem(der), to: dir.file("ek.pem"))

        let verify = try OpenSSLTool.run(["verify", "-x509_strict", "-CAfile", caPath, ekPath])
        #expect(verify.status == 0, "openssl verify: \(verify.output)")
        #expect(verify.output.contains("\(ekPath): OK"))

        let certificateKey = try OpenSSLTool.run(["x509", "-in", ekPath, "-noout", "-pubkey"])
        #expect(certificateKey.status == 0 && certificateKey.output == ek.publicKeyPEM)

        let text = try OpenSSLTool.run(["x509", "-in", ekPath, "-noout", "-text"]).output
        #expect(text.contains("Version: 3 (0x2)"))
        #expect(text.contains("Serial Number: 4328719365 (0x102030405)"))
        #expect(text.contains("Signature Algorithm: ecdsa-with-SHA256"))
        #expect(text.contains("Issuer: CN = GuestVault host CA test"))
        #expect(lines(of: text).contains("Subject: "), "the subject is empty")
        #expect(text.contains("X509v3 Subject Alternative Name: critical"))
        #expect(text.contains("DirName:/2.23.133.2.1=id:00001014/2.23.133.2.2=swtpm-libtpms/2.23.133.2.3=id:20191023"))
        #expect(text.contains("X509v3 Basic Constraints: critical"))
        #expect(lines(of: text).contains("CA:FALSE"))
        #expect(text.contains("X509v3 Key Usage: critical"))
        #expect(lines(of: text).contains(kind == .rsa ? "Key Encipherment" : "Key Agreement"))
        #expect(text.contains("X509v3 Extended Key Usage"))
        #expect(lines(of: text).contains("2.23.133.8.1"))
        #expect(text.contains("X509v3 Authority Key Identifier"))
        #expect(text.contains("X509v3 Subject Directory Attributes"))

        // TPMSpecification ("2.0", level 0, revision 164) in subjectDirectoryAttributes,
        // encoded by hand from swtpm's tpm.asn.
        let specification: [UInt8] = [
            0x30, 0x19, 0x30, 0x17, 0x06, 0x05, 0x67, 0x81, 0x05, 0x02, 0x10,
            0x31, 0x0E, 0x30, 0x0C, 0x0C, 0x03, 0x32, 0x2E, 0x30, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0xA4,
        ]
        #expect(occurs(specification, in: der))

        // The CA's own certificate.
        let caText = try OpenSSLTool.run(["x509", "-in", caPath, "-noout", "-text"]).output
        #expect(caText.contains("Subject: CN = GuestVault host CA test"))
        #expect(caText.contains("CA:TRUE"))
        #expect(caText.contains("Certificate Sign, CRL Sign"))
        #expect(caText.contains("X509v3 Subject Key Identifier"))
        #expect(caText.contains("ASN1 OID: prime256v1"))
    }

    @Test func namesTheVMAndDrawsARandomSerialWhenAsked() throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA test")
        let ek = try TestEK(.ecc, in: dir)
        let vm = UUID().uuidString.lowercased()
        let first = try ca.issueEKCertificate(EKCertificateRequest(publicKey: ek.publicKey, vmID: vm))
        let second = try ca.issueEKCertificate(EKCertificateRequest(publicKey: ek.publicKey, vmID: vm))
        let path = try write(pem(first), to: dir.file("ek.pem"))
        let subject = try OpenSSLTool.run(["x509", "-in", path, "-noout", "-subject"]).output
        #expect(subject == "subject=CN = \(vm)\n")
        let serials = try [first, second].map { der -> String in
            let path = try write(pem(der), to: dir.file("ek-serial.pem"))
            return try OpenSSLTool.run(["x509", "-in", path, "-noout", "-serial"]).output
        }
        #expect(serials[0] != serials[1])
        let caPath = try write(ca.certificatePEM, to: dir.file("ca.pem"))
        #expect(try OpenSSLTool.run(["verify", "-x509_strict", "-CAfile", caPath, path]).status == 0)
    }

    /// The same EK certificate fields as swtpm 0.7.1's `swtpm_cert --tpm2`, extension by
    /// extension, for the same CA, key and attributes.
    @Test(.enabled(if: OpenSSLTool.swtpmCert != nil, "swtpm_cert (swtpm-tools) is not installed"),
          arguments: [EKKind.rsa, .ecc])
    func matchesSwtpmCert(_ kind: EKKind) throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA test")
        let caPath = try write(ca.certificatePEM, to: dir.file("ca.pem"))
        let keyPath = try write(pem(ca.privateKeyDER.unsafeCopyOfBytes(), label: "PRIVATE KEY"), to: dir.file("ca-key.pem"))
        let ek = try TestEK(kind, in: dir)
        var arguments = ["--tpm2", "--signkey", keyPath, "--issuercert", caPath, "--out-cert", dir.file("swtpm.der"),
                         "--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm-libtpms", "--tpm-version", "id:20191023",
                         "--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164",
                         "--serial", "4660", "--days", "3650"]
        switch ek.publicKey {
        case .rsa(let modulus, _): arguments += ["--modulus", hexString(modulus)]
        case .eccP256(let x, let y): arguments += ["--ecc-x", hexString(x), "--ecc-y", hexString(y), "--ecc-curveid", "secp256r1"]
        case .eccP384(let x, let y): arguments += ["--ecc-x", hexString(x), "--ecc-y", hexString(y), "--ecc-curveid", "secp384r1"]
        }
        let swtpm = try OpenSSLTool.run(arguments, executable: OpenSSLTool.swtpmCert!)
        try #require(swtpm.status == 0, "swtpm_cert: \(swtpm.output)")
        var request = EKCertificateRequest(publicKey: ek.publicKey)
        request.serial = [0x12, 0x34]
        let ours = try write(pem(try ca.issueEKCertificate(request)), to: dir.file("ours.pem"))
        let theirs = dir.file("swtpm.pem")
        #expect(try OpenSSLTool.run(["x509", "-inform", "DER", "-in", dir.file("swtpm.der"), "-out", theirs]).status == 0)
        let ourText = try OpenSSLTool.run(["x509", "-in", ours, "-noout", "-text"]).output
        let theirText = try OpenSSLTool.run(["x509", "-in", theirs, "-noout", "-text"]).output
        #expect(extensions(ourText) == extensions(theirText))
        #expect(extensions(ourText).count == 6)
        for field in ["Subject:", "Issuer:", "Serial Number:", "Public-Key:"] {
            #expect(lines(of: ourText).first { $0.hasPrefix(field) } == lines(of: theirText).first { $0.hasPrefix(field) })
        }
    }

    // MARK: The vault's CA

    @Test func theVaultMakesItsCAOnceAndKeepsItSealed() throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let path = dir.file("vault")
        let vault = try KeyVault.createFileVault(at: path)
        let first = try vault.hostCA()
        let second = try vault.hostCA()
        let reopened = try KeyVault.open(at: path).hostCA()
        #expect(first.certificateDER == second.certificateDER && first.certificateDER == reopened.certificateDER)
        #expect(first.privateKeyDER == reopened.privateKeyDER)

        #expect(mode(of: "\(path)/ca.key") == 0o600)
        #expect(mode(of: "\(path)/ca.pem") == 0o644)
        let sealed = try FileSystem.readFile("\(path)/ca.key", limit: 1 << 20)
        #expect(!occurs(first.privateKeyDER.unsafeCopyOfBytes(), in: sealed))
        #expect(!occurs(Array(first.certificateDER.prefix(64)), in: sealed))
        #expect(try String(contentsOfFile: "\(path)/ca.pem", encoding: .utf8) == first.certificatePEM)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasPrefix("ca.") }
        #expect(Set(leftovers) == ["ca.key", "ca.pem"])

        let subject = try OpenSSLTool.run(["x509", "-in", "\(path)/ca.pem", "-noout", "-subject"]).output
        #expect(subject == "subject=CN = GuestVault host CA \(hexString(vault.rootKeyID.prefix(4)))\n")

        // A certificate from the reloaded CA verifies against the published ca.pem.
        let ek = try TestEK(.rsa, in: dir)
        let ekPath = try write(pem(try reopened.issueEKCertificate(EKCertificateRequest(publicKey: ek.publicKey))),
                               to: dir.file("ek.pem"))
        #expect(try OpenSSLTool.run(["verify", "-x509_strict", "-CAfile", "\(path)/ca.pem", ekPath]).status == 0)

        // ca.pem is public and derived: a lost or altered copy is written again.
        try FileSystem.removeFile("\(path)/ca.pem")
        _ = try vault.hostCA()
        #expect(try String(contentsOfFile: "\(path)/ca.pem", encoding: .utf8) == first.certificatePEM)
        try FileSystem.writeAtomically(Array("not a certificate\n".utf8), to: "\(path)/ca.pem", mode: 0o644)
        #expect(try vault.hostCA().certificateDER == first.certificateDER)
        #expect(try String(contentsOfFile: "\(path)/ca.pem", encoding: .utf8) == first.certificatePEM)
    }

    @Test func concurrentFirstUsesAgreeOnOneCA() async throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let path = dir.file("vault")
        let vault = try KeyVault.createFileVault(at: path)
        let certificates = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<6 { group.addTask { try vault.hostCA().certificateDER } }
            return try await group.reduce(into: Set<[UInt8]>()) { $0.insert($1) }
        }
        #expect(certificates.count == 1)
        #expect(try vault.hostCA().certificateDER == certificates.first)
        let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasPrefix("ca.") }
        #expect(Set(files) == ["ca.key", "ca.pem"])
    }

    @Test func refusesAChangedTruncatedOrOversizedCAKeyFile() throws {
        let dir = TemporaryDirectory("guestvault-hostca")
        let path = dir.file("vault")
        let vault = try KeyVault.createFileVault(at: path)
        let ca = try vault.hostCA()
        let keyPath = "\(path)/ca.key"
        let original = try FileSystem.readFile(keyPath, limit: 1 << 20)
        for offset in original.indices {
            var changed = original
            changed[offset] ^= 0x01
            try Data(changed).write(to: URL(fileURLWithPath: keyPath))  // in place, keeping the mode; no fsync
            let error = try #require(throws: VaultError.self, "byte \(offset)") { try vault.hostCA() }
            #expect(error.code == .corrupt, "byte \(offset): \(error)")
            #expect(try FileSystem.readFile(keyPath, limit: 1 << 20) == changed, "byte \(offset): the file was replaced")
        }
        for length in [0, 1, 12, 24, 40, original.count / 2, original.count - 1] {
            try FileSystem.writeAtomically(Array(original.prefix(length)), to: keyPath)
            let error = try #require(throws: VaultError.self, "length \(length)") { try vault.hostCA() }
            #expect(error.code == .corrupt, "length \(length): \(error)")
        }
        try FileSystem.writeAtomically(original + [UInt8](repeating: 0, count: 16 * 1024), to: keyPath)
        #expect(throws: VaultError.self) { try vault.hostCA() }

        // Another vault's root key does not open it.
        let other = try KeyVault.createFileVault(at: dir.file("other"))
        try FileSystem.writeAtomically(original, to: "\(dir.file("other"))/ca.key")
        let foreign = try #require(throws: VaultError.self) { try other.hostCA() }
        #expect(foreign.code == .corrupt)

        try FileSystem.writeAtomically(original, to: keyPath, mode: 0o644)
        let permissions = try #require(throws: VaultError.self) { try vault.hostCA() }
        #expect(permissions.code == .insecurePermissions && permissions.description.contains("chmod 600"))
        try FileSystem.setMode(keyPath, 0o600)
        #expect(try vault.hostCA().certificateDER == ca.certificateDER)
    }

    // MARK: Bad input

    @Test func refusesMalformedEndorsementKeys() throws {
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA test")
        var modulus = try SecureRandom.bytes(count: 256)
        modulus[0] |= 0x80
        modulus[255] |= 0x01
        var even = modulus
        even[255] &= 0xfe
        var short = modulus
        short[0] = 0x00
        let generator = hexBytes("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
            + hexBytes("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
        let offCurve = Array(generator.prefix(32)) + Array(generator.suffix(32).dropLast()) + [generator.last! ^ 1]
        let bad: [(String, EndorsementPublicKey)] = [
            ("RSA modulus of 255 bytes", .rsa(modulus: Array(modulus.prefix(255)), exponent: 0)),
            ("RSA modulus of 257 bytes", .rsa(modulus: modulus + [1], exponent: 0)),
            ("RSA modulus of 128 bytes", .rsa(modulus: Array(modulus.prefix(128)), exponent: 0)),
            ("RSA modulus without its top bit", .rsa(modulus: short, exponent: 0)),
            ("even RSA modulus", .rsa(modulus: even, exponent: 0)),
            ("RSA exponent 2", .rsa(modulus: modulus, exponent: 2)),
            ("empty RSA modulus", .rsa(modulus: [], exponent: 0)),
            ("ECC point off the curve", .eccP256(x: Array(offCurve.prefix(32)), y: Array(offCurve.suffix(32)))),
            ("ECC point at zero", .eccP256(x: [UInt8](repeating: 0, count: 32), y: [UInt8](repeating: 0, count: 32))),
            ("empty ECC coordinates", .eccP256(x: [], y: [])),
            ("empty ECC y", .eccP256(x: Array(generator.prefix(32)), y: [])),
            ("33-byte ECC x", .eccP256(x: [0] + Array(generator.prefix(32)), y: Array(generator.suffix(32)))),
        ]
        for (name, key) in bad {
            let error = try #require(throws: CryptoError.self, "\(name)") {
                try ca.issueEKCertificate(EKCertificateRequest(publicKey: key))
            }
            #expect(error.code == .invalidPublicKey, "\(name): \(error)")
        }
        // The generator itself is a good key: the checks above are not refusing everything.
        _ = try ca.issueEKCertificate(EKCertificateRequest(publicKey: .eccP256(x: Array(generator.prefix(32)),
                                                                               y: Array(generator.suffix(32)))))
    }

    @Test func refusesBadRequestsAndMismatchedCAs() throws {
        let ca = try CertificateAuthority.generate(commonName: "GuestVault host CA test")
        let generator = hexBytes("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
            + hexBytes("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
        let key = EndorsementPublicKey.eccP256(x: Array(generator.prefix(32)), y: Array(generator.suffix(32)))
        var requests: [(String, EKCertificateRequest)] = []
        var request = EKCertificateRequest(publicKey: key)
        request.serial = [UInt8](repeating: 0xff, count: 20)
        requests.append(("serial of 2^160 - 1", request))
        request.serial = [0, 0, 0]
        requests.append(("zero serial", request))
        request = EKCertificateRequest(publicKey: key)
        request.validityDays = 0
        requests.append(("validity of 0 days", request))
        request = EKCertificateRequest(publicKey: key)
        request.tpmManufacturer = ""
        requests.append(("empty manufacturer", request))
        request = EKCertificateRequest(publicKey: key, vmID: String(repeating: "v", count: 65))
        requests.append(("VM id of 65 characters", request))
        for (name, request) in requests {
            let error = try #require(throws: CryptoError.self, "\(name)") { try ca.issueEKCertificate(request) }
            #expect(error.code == .invalidInput, "\(name): \(error)")
        }
        request = EKCertificateRequest(publicKey: key)
        request.serial = [0x7f] + [UInt8](repeating: 0xff, count: 19)
        _ = try ca.issueEKCertificate(request)

        let other = try CertificateAuthority.generate(commonName: "another")
        let cases: [(String, SecretBytes, [UInt8])] = [
            ("another CA's key", other.privateKeyDER, ca.certificateDER),
            ("a certificate with a byte more", ca.privateKeyDER, ca.certificateDER + [0]),
            ("a truncated certificate", ca.privateKeyDER, Array(ca.certificateDER.dropLast())),
            ("an empty certificate", ca.privateKeyDER, []),
            ("an empty key", SecretBytes(copying: []), ca.certificateDER),
            ("a key with a byte more", SecretBytes(copying: ca.privateKeyDER.unsafeCopyOfBytes() + [0]), ca.certificateDER),
            ("a random key", try SecretBytes(randomCount: 138), ca.certificateDER),
        ]
        for (name, privateKey, certificate) in cases {
            let error = try #require(throws: CryptoError.self, "\(name)") {
                try CertificateAuthority(privateKeyDER: privateKey, certificateDER: certificate)
            }
            #expect(error.code == .invalidInput, "\(name): \(error)")
        }
        // An EK certificate is no CA.
        let ek = try ca.issueEKCertificate(EKCertificateRequest(publicKey: key))
        #expect(throws: CryptoError.self) { try CertificateAuthority(privateKeyDER: ca.privateKeyDER, certificateDER: ek) }
        #expect(!"\(ca)".contains(hexString(ca.privateKeyDER.unsafeCopyOfBytes())))
    }
}

// MARK: - Helpers

enum EKKind: String, Sendable, CustomStringConvertible {
    case rsa, ecc
    var description: String { rawValue }
}

/// An EK stand-in made by `openssl genpkey`, with its public key in the form the TPM
/// reports and as OpenSSL prints it.
private struct TestEK {
    let publicKey: EndorsementPublicKey
    let publicKeyPEM: String

    init(_ kind: EKKind, in dir: TemporaryDirectory) throws {
        let keyPath = dir.file("ek-\(kind)-\(UUID().uuidString.prefix(8)).pem")
        let generate = kind == .rsa
            ? ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyPath]
            : ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", keyPath]
        try #require(try OpenSSLTool.run(generate).status == 0)
        publicKeyPEM = try OpenSSLTool.run(["pkey", "-in", keyPath, "-pubout"]).output
        switch kind {
        case .rsa:
            let modulus = try OpenSSLTool.run(["rsa", "-in", keyPath, "-noout", "-modulus"]).output
            let hex = modulus.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "Modulus=", with: "")
            publicKey = .rsa(modulus: hexBytes(hex), exponent: 0)
        case .ecc:
            // A P-256 SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
            let der = try OpenSSLTool.runData(["pkey", "-in", keyPath, "-pubout", "-outform", "DER"])
            let point = Array(der.suffix(65))
            try #require(der.count == 91 && point[0] == 0x04)
            publicKey = .eccP256(x: Array(point[1...32]), y: Array(point[33...64]))
        }
    }
}

private enum OpenSSLTool {
    static let swtpmCert: String? = ["/usr/bin/swtpm_cert", "/usr/local/bin/swtpm_cert"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs a tool (`openssl` by default) and returns its exit status and its standard
    /// output and error together.
    static func run(_ arguments: [String], executable: String = "/usr/bin/openssl") throws -> (status: Int32, output: String) {
        let (status, data) = try execute(arguments, executable: executable)
        return (status, String(decoding: data, as: UTF8.self))
    }

    static func runData(_ arguments: [String]) throws -> Data {
        let (status, data) = try execute(arguments, executable: "/usr/bin/openssl", mergeErrors: false)
        try #require(status == 0, "openssl \(arguments.joined(separator: " ")) failed")
        return data
    }

    private static func execute(_ arguments: [String], executable: String, mergeErrors: Bool = true) throws -> (Int32, Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = mergeErrors ? pipe : FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }
}

private func write(_ text: String, to path: String) throws -> String {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

private func pem(_ der: [UInt8], label: String = "CERTIFICATE") -> String {
    "-----BEGIN \(label)-----\n" + Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        + "\n-----END \(label)-----\n"
}

private func hexBytes(_ hex: String) -> [UInt8] {
    bytes(fromHex: hex) ?? []
}

/// The lines of `openssl x509 -text` output, without their indentation.
private func lines(of text: String) -> [String] {
    text.split(separator: "\n").map { String($0.drop { $0 == " " }) }
}

/// The extensions in `openssl x509 -text` output, each as its header line and value
/// lines, sorted (swtpm 0.7.1 puts extendedKeyUsage first, swtpm_cert today and we last).
private func extensions(_ text: String) -> [String] {
    let all = lines(of: text)
    guard let start = all.firstIndex(of: "X509v3 extensions:") else { return [] }
    let end = all[start...].firstIndex { $0.hasPrefix("Signature Algorithm:") } ?? all.endIndex
    var blocks: [String] = []
    for line in all[(start + 1)..<end] {
        if line.hasPrefix("X509v3 ") || blocks.isEmpty {
            blocks.append(line)
        } else {
            blocks[blocks.count - 1] += "\n" + line
        }
    }
    return blocks.sorted()
}

/// Whether `needle` occurs in `haystack` as consecutive bytes.
private func occurs(_ needle: [UInt8], in haystack: [UInt8]) -> Bool {
    guard !needle.isEmpty, needle.count <= haystack.count else { return false }
    return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
}
