// GuestVaultCrypto: the crypto core of GuestVault, and the only module that calls
// OpenSSL (libcrypto 3). Everything above it seals, derives and wraps through these
// types:
//
//   Keys/SecretBytes        key material, zeroed when released, never printed
//   AEAD/AESGCM*            AES-256-GCM, one-shot, reusable context, streaming
//   KDF/HKDF, KDF/KBKDF     HKDF-SHA256 (RFC 5869), SP 800-108 counter HMAC-SHA256
//   KDF/PasswordKDF         scrypt and PBKDF2
//   Hash/                   SHA-256, HMAC-SHA256
//   Random/SecureRandom     RAND_bytes; failure is an error
//   KeyAgreement/X25519     RFC 7748
//   KeyWrap/AESKeyWrap      RFC 5649 key wrap with padding
//   Core/                   CryptoError, and the OpenSSL plumbing (error queue,
//                           fetched algorithms, parameter arrays)

/// The version of GuestVault.
public enum GuestVaultVersion {
    public static let string = "0.1.0"
}
