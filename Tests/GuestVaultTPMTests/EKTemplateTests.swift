import GuestVaultCore
import GuestVaultTPM
import Testing

/// The high-range EK templates, PCR bank allocation and its reconfiguration, on libtpms.
@Suite struct EKTemplateTests {
    /// A TPMT_PUBLIC without its unique field (the key value): what a template fixes.
    static func withoutUnique(_ publicArea: [UInt8]) throws -> [UInt8] {
        var r = ByteReader(publicArea, subject: "TPMT_PUBLIC")
        let type = try r.u16("type")
        _ = try r.u16("nameAlg"); _ = try r.u32("objectAttributes"); _ = try r.sized("authPolicy")
        if try r.u16("symmetric") != TPMConstant.algNull { _ = try r.u16("keyBits"); _ = try r.u16("mode") }
        if try r.u16("scheme") != TPMConstant.algNull { _ = try r.u16("scheme hash") }
        if type == TPMConstant.algRSA { _ = try r.u16("keyBits"); _ = try r.u32("exponent") } else { _ = try r.u16("curve"); _ = try r.u16("kdf") }
        return Array(publicArea.prefix(r.offset))
    }

    @Test func templatesHaveSwtpmSetupsFields() throws {
        // swtpm_setup 0.7.1 (src/swtpm_setup/swtpm.c): RSA 3072 and ECC P-384 EKs with
        // nameAlg SHA-384, attributes 0x000300f2, the 48-byte policy, AES-256-CFB and an
        // empty unique field.
        let rsa = EKTemplates.rsa3072
        #expect(Array(rsa.prefix(10)) == [0x00, 0x01, 0x00, 0x0C, 0x00, 0x03, 0x00, 0xF2, 0x00, 0x30])
        #expect(Array(rsa[10..<58]) == Array(EKTemplates.eccP384[10..<58]))
        #expect(Array(rsa[10..<14]) == [0xB2, 0x6E, 0x7D, 0x28])
        #expect(Array(rsa.suffix(from: 58)) == [0x00, 0x06, 0x01, 0x00, 0x00, 0x43, 0x00, 0x10, 0x0C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
        let ecc = EKTemplates.eccP384
        #expect(Array(ecc.prefix(10)) == [0x00, 0x23, 0x00, 0x0C, 0x00, 0x03, 0x00, 0xF2, 0x00, 0x30])
        #expect(Array(ecc.suffix(from: 58)) == [0x00, 0x06, 0x01, 0x00, 0x00, 0x43, 0x00, 0x10, 0x00, 0x04, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00])
        #expect(EndorsementKeyKind.rsa3072.persistentHandle == 0x8101_001C && EndorsementKeyKind.rsa3072.certificateIndex == 0x01C0_001C)
        #expect(EndorsementKeyKind.eccP384.persistentHandle == 0x8101_0016 && EndorsementKeyKind.eccP384.certificateIndex == 0x01C0_0016)
        #expect(EKTemplates.platformCertificateIndex == 0x01C0_8000)
    }

    @Test func manufactureHighRangeEKsBanksAndReconfigure() throws {
        try EngineGate.run {
            let options = TPMManufacturer.Options(
                createEndorsementKeys: true, issueCertificate: { _ in [0x30, 0x01, 0x00] },
                endorsementKeys: [.rsa3072, .eccP384], issuePlatformCertificate: { _ in [0x30, 0x02, 0x00, 0x00] },
                lockNVRAM: false, pcrBanks: [.sha1, .sha384])
            let made = try TPMManufacturer.manufacture(options: options)
            #expect(made.report.endorsementKeys == [.rsa3072, .eccP384])
            #expect(made.report.platformCertificateBytes == 4)
            #expect(made.report.pcrBanks == [.sha1, .sha384])

            var publics: [UInt32: [UInt8]] = [:]
            let storage = MemoryTPMStorage([.permanent: made.permanent])
            var engine = try TPMEngine.start(storage: storage)
            try engine.startup()
            #expect(try engine.activePCRBanks() == [.sha1, .sha384])
            for kind in [EndorsementKeyKind.rsa3072, .eccP384] {
                let publicArea = try engine.readPublic(kind.persistentHandle)
                #expect(try Self.withoutUnique(publicArea) == (try Self.withoutUnique(kind.template)))
                publics[kind.persistentHandle] = publicArea
                #expect(try engine.nvRead(kind.certificateIndex, size: 3, auth: TPMConstant.rhPlatform) == [0x30, 0x01, 0x00])
            }
            #expect(try engine.nvRead(EKTemplates.platformCertificateIndex, size: 4, auth: TPMConstant.rhPlatform) == [0x30, 0x02, 0x00, 0x00])
            // Not locked: the platform may still write (swtpm_setup without --lock-nvram).
            try engine.nvWrite(EKTemplates.platformCertificateIndex, [0x30, 0x02, 0x05, 0x00], auth: TPMConstant.rhPlatform)
            try engine.shutdown()
            try engine.stop()
            guard let written = storage.snapshot[.permanent] else { Issue.record("no permanent state"); return }

            let (changed, before) = try TPMManufacturer.reallocatePCRBanks(permanent: written, banks: [.sha256, .sha512])
            #expect(before == [.sha1, .sha384])
            let reconfigured = try #require(changed)
            engine = try TPMEngine.start(storage: MemoryTPMStorage([.permanent: reconfigured]))
            try engine.startup()
            #expect(try engine.activePCRBanks() == [.sha256, .sha512])
            for (handle, publicArea) in publics { #expect(try engine.readPublic(handle) == publicArea, "the EK stays") }
            #expect(try engine.nvRead(EKTemplates.platformCertificateIndex, size: 4, auth: TPMConstant.rhPlatform) == [0x30, 0x02, 0x05, 0x00])
            try engine.shutdown()
            try engine.stop()

            let again = try TPMManufacturer.reallocatePCRBanks(permanent: reconfigured, banks: [.sha256, .sha512])
            #expect(again.permanent == nil && again.before == [.sha256, .sha512], "nothing to change")
        }
    }

    @Test func lockedCertificatesRefuseWrites() throws {
        try EngineGate.run {
            let made = try TPMManufacturer.manufacture(options: .init(createEndorsementKeys: true, issueCertificate: { _ in [0x30, 0x00] },
                                                                      endorsementKeys: [.rsa2048], lockNVRAM: true))
            let engine = try TPMEngine.start(storage: MemoryTPMStorage([.permanent: made.permanent]))
            try engine.startup()
            #expect(try engine.activePCRBanks() == [.sha256])
            let error = try #require(throws: TPMEngineError.self) {
                try engine.nvWrite(EKTemplates.rsaCertificateIndex, [0x30, 0x01], auth: TPMConstant.rhPlatform)
            }
            #expect(error.code == .tpmError)
            try engine.stop()
        }
    }

    @Test func emptyBankSetIsRefused() throws {
        #expect(throws: TPMEngineError.self) { try TPMManufacturer.manufacture(options: .init(pcrBanks: [])) }
    }
}
