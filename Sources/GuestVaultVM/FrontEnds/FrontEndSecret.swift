import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import Logging

extension ErrorCode {
    /// The VM secret libvirt passed is not the one the VM's TPM state was set up with.
    static let frontEndSecretMismatch = ErrorCode("frontEndSecretMismatch", .keys)
}

/// libvirt's VM secret (`<encryption secret=.../>`, passed as `--pwdfile-fd` and `--key
/// pwdfd=`) and the container. The vault opens the container on every start; the secret is
/// an additional passphrase protector, and the front end checks at every start that the
/// secret libvirt passes is still the one that protector was made with, as swtpm's state
/// would not decrypt under another (docs/LIBVIRT.md).
///
/// The check is cheap: entry `libvirt.secret` of the container holds
/// HMAC-SHA256(key = the secret, message = "GuestVault v1 libvirt secret" ‖ 0x00 ‖ container
/// id (16 bytes)), 32 bytes. The entry is sealed like every entry, so only a holder of the
/// container's key can read it (and that holder can open the state already); the
/// passphrase slot's scrypt runs only when a container has no such entry yet.
enum FrontEndSecret {
    static let entryName = "libvirt.secret"
    static let label = Array("GuestVault v1 libvirt secret".utf8) + [0]

    static func verifier(_ secret: SecretBytes, containerID: [UInt8]) throws -> [UInt8] {
        try HMACSHA256.authenticationCode(for: label + containerID, key: secret)
    }

    /// Records the secret's verifier in a container made with it (the caller commits).
    static func record(_ secret: SecretBytes, in container: GuestStateContainer) throws {
        try container.write(entryName, try verifier(secret, containerID: container.containerID))
    }

    /// At start: the secret must be the one the container knows. A container with no
    /// verifier gets one when the secret opens its passphrase slot (a container made
    /// before the check existed), and the secret as a new passphrase slot when it has
    /// none (libvirt's encryption added to a VM that had no secret). Commits what it adds.
    static func check(_ secret: SecretBytes, container: GuestStateContainer, path: String, program: String, logger: Logger) throws {
        let mismatch = FrontEndError(
            .frontEndSecretMismatch,
            "\(program): the VM secret libvirt passed is not the one the TPM state in \(path) was set up with; set the domain's <encryption secret=.../> back to that secret (GuestVault's vault still opens the state: `guestvault` commands work without it)")
        let passphraseSlots = container.slots.slots.filter { $0.kind == .passphrase }
        if container.entryNames.contains(entryName) {
            let recorded = try container.read(entryName)
            guard try HMACSHA256.isValid(recorded, for: label + container.containerID, key: secret) else { throw mismatch }
            if passphraseSlots.isEmpty {
                // A DEK rotation without the passphrase dropped the slot: make it again.
                _ = try container.addSlot { dek in try KeyProtector.wrapForPassphrase(dek, passphrase: secret) }
                logger.notice("libvirt's VM secret protects \(path) again (its passphrase slot was gone)")
            }
            return
        }
        if passphraseSlots.isEmpty {
            _ = try container.addSlot { dek in try KeyProtector.wrapForPassphrase(dek, passphrase: secret) }
            try record(secret, in: container)
            try container.commit()
            logger.notice("libvirt now passes a VM secret for \(path): added it as a passphrase protector of the container")
            return
        }
        let only = try KeyProtectorSet(passphraseSlots)
        do {
            _ = try only.unwrap(vm: container.vm, with: UnlockCredentials(passphrase: secret))
        } catch {
            throw mismatch
        }
        try record(secret, in: container)
        try container.commit()
        logger.info("recorded a verifier of libvirt's VM secret in \(path), so later starts check it without scrypt")
    }
}
