import Dispatch
import GuestVaultCore

/// Makes a new TPM 2.0 for a container, as `swtpm_setup` does: the chosen PCR banks
/// active (SHA-256 by default), and optionally endorsement keys persisted at their usual
/// handles with certificates in the TCG NV indices and a platform certificate.
///
/// The TPM is built in memory; ``manufacture(options:)`` returns its permanent state
/// (GuestVaultTPMContainer stores it as a container's `tpm.permanent` in one commit, so
/// the container holds a whole manufactured TPM or none).
public enum TPMManufacturer {
    public struct Options: Sendable {
        /// Create and persist the endorsement keys.
        public var createEndorsementKeys: Bool
        /// Which endorsement keys, in the order they are made. The default, RSA 2048 and
        /// ECC P-256 (TCG templates L-1 and L-2), is what `guestvault create --ek` makes;
        /// the swtpm_setup front end asks for swtpm_setup's set (an RSA EK and ECC P-384).
        public var endorsementKeys: [EndorsementKeyKind]
        /// Issues the certificate of an endorsement key (DER); nil for no certificates.
        public var issueCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])?
        /// Issues the platform certificate (DER) for the first RSA endorsement key (as
        /// swtpm_setup does), stored in NV 0x01C08000; nil for none.
        public var issuePlatformCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])?
        /// Write-lock the certificate indices (swtpm_setup's `--lock-nvram`).
        public var lockNVRAM: Bool
        /// The PCR banks to allocate (each with all 24 PCRs); nil keeps libtpms' own
        /// allocation (swtpm_setup's `--pcr-banks -`).
        public var pcrBanks: Set<PCRBank>?

        public init(createEndorsementKeys: Bool = false, issueCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])? = nil,
                    endorsementKeys: [EndorsementKeyKind] = [.rsa2048, .eccP256],
                    issuePlatformCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])? = nil,
                    lockNVRAM: Bool = true, pcrBanks: Set<PCRBank>? = [.sha256]) {
            self.createEndorsementKeys = createEndorsementKeys
            self.issueCertificate = issueCertificate
            self.endorsementKeys = endorsementKeys
            self.issuePlatformCertificate = issuePlatformCertificate
            self.lockNVRAM = lockNVRAM
            self.pcrBanks = pcrBanks
        }
    }

    public struct Report: Sendable, Codable {
        /// The RSA EK's handle (0x81010001 for RSA 2048, 0x8101001C for RSA 3072).
        public var rsaEKPersistentHandle: UInt32?
        /// The ECC EK's handle (0x81010002 for P-256, 0x81010016 for P-384).
        public var eccEKPersistentHandle: UInt32?
        public var rsaCertificateBytes: Int?
        public var eccCertificateBytes: Int?
        public var permanentStateBytes: Int
        public var milliseconds: Double
        /// Every endorsement key made, in order.
        public var endorsementKeys: [EndorsementKeyKind]? = nil
        public var platformCertificateBytes: Int? = nil
        /// The PCR banks allocated.
        public var pcrBanks: [PCRBank]? = nil
    }

    /// Manufactures a TPM in memory and returns its permanent state (libtpms' "permall")
    /// and the report. Needs the process's one TPM slot.
    public static func manufacture(options: Options) throws -> (permanent: [UInt8], report: Report) {
        let start = DispatchTime.now().uptimeNanoseconds
        guard options.pcrBanks?.isEmpty != true else { throw TPMEngineError(.malformed, "a TPM needs at least one PCR bank") }
        guard Set(options.endorsementKeys).count == options.endorsementKeys.count else {
            throw TPMEngineError(.malformed, "an endorsement key kind is named twice")
        }
        let storage = MemoryTPMStorage()
        var report = Report(permanentStateBytes: 0, milliseconds: 0)

        // First power-on: a new TPM; allocate the chosen PCR banks (takes effect at reset).
        var engine = try TPMEngine.start(storage: storage)
        do {
            try engine.startup()
            if let banks = options.pcrBanks { try engine.allocatePCRBanks(banks) }
            try engine.shutdown()
            try engine.stop()
        } catch {
            try? engine.stop()
            throw error
        }

        engine = try TPMEngine.start(storage: storage)
        do {
            try engine.startup()
            report.pcrBanks = try engine.activePCRBanks().sorted()
            if options.createEndorsementKeys {
                report.endorsementKeys = []
                var platformCertificateMade = false
                for kind in options.endorsementKeys {
                    let (handle, publicArea) = try engine.createPrimary(hierarchy: TPMConstant.rhEndorsement, template: kind.template)
                    try engine.evictControl(handle, persistentHandle: kind.persistentHandle)
                    try engine.flushContext(handle)
                    let key = try TPMPublicKey(publicArea: publicArea)
                    report.endorsementKeys?.append(kind)
                    if kind.isRSA { report.rsaEKPersistentHandle = kind.persistentHandle } else { report.eccEKPersistentHandle = kind.persistentHandle }
                    if let issue = options.issueCertificate {
                        let certificate = try issue(key)
                        try writeCertificate(certificate, at: kind.certificateIndex, lock: options.lockNVRAM, engine: engine)
                        if kind.isRSA { report.rsaCertificateBytes = certificate.count } else { report.eccCertificateBytes = certificate.count }
                    }
                    if kind.isRSA, !platformCertificateMade, let issue = options.issuePlatformCertificate {
                        let certificate = try issue(key)
                        try writeCertificate(certificate, at: EKTemplates.platformCertificateIndex, lock: options.lockNVRAM, engine: engine)
                        report.platformCertificateBytes = certificate.count
                        platformCertificateMade = true
                    }
                }
            }
            try engine.shutdown()
            try engine.stop()
        } catch {
            try? engine.stop()
            throw error
        }
        guard let permanent = storage.snapshot[.permanent] else {
            throw TPMEngineError(.storage, "libtpms stored no permanent state")
        }
        report.permanentStateBytes = permanent.count
        report.milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        return (permanent, report)
    }

    /// Defines a platform-created certificate index with swtpm_setup's attributes, writes
    /// the certificate and, with `lock`, write-locks it (TPMA_NV_WRITELOCKED until the
    /// TPM is cleared, as TPMA_NV_WRITEDEFINE makes it).
    static func writeCertificate(_ certificate: [UInt8], at index: UInt32, lock: Bool, engine: TPMEngine) throws {
        guard !certificate.isEmpty, certificate.count <= 2048 else {
            throw TPMEngineError(.malformed, "a certificate of \(certificate.count) bytes for NV index 0x\(String(index, radix: 16)); 1 to 2048 bytes fit")
        }
        try engine.nvDefineSpace(index, size: certificate.count, attributes: EKTemplates.certificateAttributes, hierarchy: TPMConstant.rhPlatform)
        try engine.nvWrite(index, certificate, auth: TPMConstant.rhPlatform)
        if lock { try engine.nvWriteLock(index, auth: TPMConstant.rhPlatform) }
    }

    /// `swtpm_setup --reconfigure --pcr-banks`: allocates `banks` in the TPM whose
    /// permanent state is `permanent` (TPM2_PCR_Allocate after Startup(CLEAR), then
    /// Shutdown(CLEAR), as swtpm_setup does; the banks are active from the next start).
    /// Everything else (keys, NV, hierarchies) stays. Returns the new permanent state and
    /// the banks that were active before, or nil for the state when they are already
    /// `banks` (nothing to store). Needs the process's one TPM slot.
    public static func reallocatePCRBanks(permanent: [UInt8], banks: Set<PCRBank>) throws -> (permanent: [UInt8]?, before: Set<PCRBank>) {
        guard !banks.isEmpty else { throw TPMEngineError(.malformed, "a TPM needs at least one PCR bank") }
        let storage = MemoryTPMStorage([.permanent: permanent])
        let engine = try TPMEngine.start(storage: storage)
        let before: Set<PCRBank>
        do {
            try engine.startup()
            before = try engine.activePCRBanks()
            if before != banks { try engine.allocatePCRBanks(banks) }
            try engine.shutdown()
            try engine.stop()
        } catch {
            try? engine.stop()
            throw error
        }
        guard before != banks else { return (nil, before) }
        guard let changed = storage.snapshot[.permanent] else {
            throw TPMEngineError(.storage, "libtpms stored no permanent state")
        }
        return (changed, before)
    }
}
