import Dispatch
import GuestVaultCore

/// Makes a new TPM 2.0 for a container, as `swtpm_setup` does: the SHA-256 PCR bank
/// active, and optionally the RSA-2048 and ECC P-256 endorsement keys persisted at
/// their usual handles with certificates in the TCG NV indices.
///
/// The TPM is built in memory; ``manufacture(options:)`` returns its permanent state
/// (GuestVaultTPMContainer stores it as a container's `tpm.permanent` in one commit, so
/// the container holds a whole manufactured TPM or none).
public enum TPMManufacturer {
    public struct Options: Sendable {
        /// Create and persist the endorsement keys.
        public var createEndorsementKeys: Bool
        /// Issues the certificate of an endorsement key (DER); nil for no certificates.
        public var issueCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])?

        public init(createEndorsementKeys: Bool = false, issueCertificate: (@Sendable (TPMPublicKey) throws -> [UInt8])? = nil) {
            self.createEndorsementKeys = createEndorsementKeys
            self.issueCertificate = issueCertificate
        }
    }

    public struct Report: Sendable, Codable {
        public var rsaEKPersistentHandle: UInt32?
        public var eccEKPersistentHandle: UInt32?
        public var rsaCertificateBytes: Int?
        public var eccCertificateBytes: Int?
        public var permanentStateBytes: Int
        public var milliseconds: Double
    }

    /// Manufactures a TPM in memory and returns its permanent state (libtpms' "permall")
    /// and the report. Needs the process's one TPM slot.
    public static func manufacture(options: Options) throws -> (permanent: [UInt8], report: Report) {
        let start = DispatchTime.now().uptimeNanoseconds
        let storage = MemoryTPMStorage()
        var report = Report(permanentStateBytes: 0, milliseconds: 0)

        // First power-on: a new TPM; keep only the SHA-256 PCR bank (takes effect at reset).
        var engine = try TPMEngine.start(storage: storage)
        do {
            try engine.startup()
            try engine.allocateSHA256BankOnly()
            try engine.shutdown()
            try engine.stop()
        } catch {
            try? engine.stop()
            throw error
        }

        engine = try TPMEngine.start(storage: storage)
        do {
            try engine.startup()
            if options.createEndorsementKeys {
                let keys: [([UInt8], UInt32, UInt32)] = [
                    (EKTemplates.rsa2048, EKTemplates.rsaPersistentHandle, EKTemplates.rsaCertificateIndex),
                    (EKTemplates.eccP256, EKTemplates.eccPersistentHandle, EKTemplates.eccCertificateIndex),
                ]
                for (template, persistent, certificateIndex) in keys {
                    let (handle, publicArea) = try engine.createPrimary(hierarchy: TPMConstant.rhEndorsement, template: template)
                    try engine.evictControl(handle, persistentHandle: persistent)
                    try engine.flushContext(handle)
                    let key = try TPMPublicKey(publicArea: publicArea)
                    if persistent == EKTemplates.rsaPersistentHandle { report.rsaEKPersistentHandle = persistent } else { report.eccEKPersistentHandle = persistent }
                    if let issue = options.issueCertificate {
                        let certificate = try issue(key)
                        try engine.nvDefineSpace(certificateIndex, size: certificate.count, attributes: EKTemplates.certificateAttributes,
                                                 hierarchy: TPMConstant.rhPlatform)
                        try engine.nvWrite(certificateIndex, certificate, auth: TPMConstant.rhPlatform)
                        try engine.nvWriteLock(certificateIndex, auth: TPMConstant.rhPlatform)
                        if persistent == EKTemplates.rsaPersistentHandle { report.rsaCertificateBytes = certificate.count } else { report.eccCertificateBytes = certificate.count }
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
}
