import GuestVaultCrypto
public import GuestVaultKeys

/// File vaults with fixed root keys, made once per process in the workspace, so that
/// inputs made with the same root key (the seed corpora, Vectors/) unlock.
public enum FixedVault {
    /// The root key of Vectors/formats/containers (Tests/GuestVaultStateTests/ContainerVectorTests.swift):
    /// bytes 0x30...0x4f.
    public static let containerRootKey: [UInt8] = (0..<32).map { UInt8(0x30 + $0) }
    /// The root key of Vectors/formats/keys.json ("root"): bytes 0x00...0x1f.
    public static let keyVectorRootKey: [UInt8] = (0..<32).map { UInt8($0) }

    /// The vault every container target unlocks with.
    public static let containers: KeyVault = make("container-vault", rootKey: containerRootKey)
    /// The vault of the key vectors.
    public static let keyVectors: KeyVault = make("key-vector-vault", rootKey: keyVectorRootKey)

    public static func make(_ name: String, rootKey: [UInt8]) -> KeyVault {
        do {
            return try KeyVault.createFileVault(at: FuzzWorkspace.file(name), importing: SecretBytes(copying: rootKey))
        } catch {
            fatalError("fuzz harness: could not create the fixed vault \(name): \(error)")
        }
    }
}
