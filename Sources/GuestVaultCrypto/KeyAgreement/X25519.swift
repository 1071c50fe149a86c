internal import CLibCrypto

/// X25519 (RFC 7748) key agreement.
public enum X25519 {
    public static let keyByteCount = 32

    /// A public key: 32 bytes, the u-coordinate (little-endian, as RFC 7748 encodes it).
    public struct PublicKey: Sendable, Hashable, CustomStringConvertible {
        public let rawRepresentation: [UInt8]

        public init(rawRepresentation: [UInt8]) throws {
            guard rawRepresentation.count == X25519.keyByteCount else {
                throw CryptoError(.invalidPublicKey, operation: "X25519 public key",
                                  reason: "public key is \(rawRepresentation.count) bytes, expected 32")
            }
            self.rawRepresentation = rawRepresentation
        }

        public var description: String { "X25519.PublicKey(\(hexString(rawRepresentation)))" }
    }

    /// A private key: 32 secret bytes (the scalar), zeroed when released.
    public struct PrivateKey: Sendable, CustomStringConvertible {
        public let rawRepresentation: SecretBytes
        public let publicKey: PublicKey

        /// A new random key pair.
        public init() throws {
            try self.init(rawRepresentation: SecretBytes(randomCount: X25519.keyByteCount))
        }

        /// The key pair for a given scalar.
        public init(rawRepresentation: SecretBytes) throws {
            let operation = "X25519 private key"
            guard rawRepresentation.count == X25519.keyByteCount else {
                throw CryptoError(.invalidKeySize, operation: operation,
                                  reason: "private key is \(rawRepresentation.count) bytes, expected 32")
            }
            let pkey = try Self.makePrivate(rawRepresentation, operation)
            defer { EVP_PKEY_free(pkey) }
            var raw = [UInt8](repeating: 0, count: X25519.keyByteCount)
            var length = raw.count
            try OpenSSL.check(raw.withUnsafeMutableBufferPointer { EVP_PKEY_get_raw_public_key(pkey, $0.baseAddress, &length) },
                              operation, "EVP_PKEY_get_raw_public_key")
            self.rawRepresentation = rawRepresentation
            self.publicKey = try PublicKey(rawRepresentation: raw)
        }

        /// The shared secret with `peer`. Throws if the result is all zeros (a
        /// small-order peer key), which OpenSSL refuses.
        public func sharedSecret(with peer: PublicKey) throws -> SecretBytes {
            let operation = "X25519 key agreement"
            let mine = try Self.makePrivate(rawRepresentation, operation)
            defer { EVP_PKEY_free(mine) }
            guard let theirs = peer.rawRepresentation.withUnsafeBufferPointer({
                EVP_PKEY_new_raw_public_key_ex(nil, "X25519", nil, $0.baseAddress, $0.count)
            }) else {
                throw OpenSSL.error(.invalidPublicKey, operation, "OpenSSL refused the peer's public key")
            }
            defer { EVP_PKEY_free(theirs) }
            guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, mine, nil) else {
                throw OpenSSL.error(.libraryFailure, operation, "EVP_PKEY_CTX_new_from_pkey failed")
            }
            defer { EVP_PKEY_CTX_free(ctx) }
            try OpenSSL.check(EVP_PKEY_derive_init(ctx), operation, "EVP_PKEY_derive_init")
            try OpenSSL.check(EVP_PKEY_derive_set_peer(ctx, theirs), operation, "EVP_PKEY_derive_set_peer")
            return try SecretBytes(unsafeUninitializedCount: X25519.keyByteCount) { (out) in
                var length = out.count
                let status = EVP_PKEY_derive(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length)
                if status != 1 || length != X25519.keyByteCount {
                    throw OpenSSL.error(.invalidPublicKey, operation,
                                        "no shared secret (the peer's key may be of small order)")
                }
            }
        }

        public var description: String { "X25519.PrivateKey(public: \(hexString(publicKey.rawRepresentation)), private: redacted)" }

        private static func makePrivate(_ raw: SecretBytes, _ operation: String) throws -> OpaquePointer {
            guard let pkey = raw.withUnsafeBytes({
                EVP_PKEY_new_raw_private_key_ex(nil, "X25519", nil, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count)
            }) else {
                throw OpenSSL.error(.invalidKeySize, operation, "OpenSSL refused the private key")
            }
            return pkey
        }
    }
}

/// Lowercase hexadecimal of public bytes.
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes from hexadecimal; nil if the text is not an even number of hex digits.
public func bytes(fromHex text: some StringProtocol) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count / 2)
    var high: UInt8?
    for c in text.utf8 {
        let value: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): value = c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): value = c - UInt8(ascii: "A") + 10
        default: return nil
        }
        if let h = high {
            out.append(h << 4 | value)
            high = nil
        } else {
            high = value
        }
    }
    return high == nil ? out : nil
}
