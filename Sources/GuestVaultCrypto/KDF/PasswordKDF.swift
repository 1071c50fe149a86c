internal import CLibCrypto

/// Passphrase-based key derivation: scrypt (RFC 7914) for GuestVault's own protectors,
/// and PBKDF2 (RFC 8018) where another format requires it.
public enum PasswordKDF {
    /// scrypt cost parameters, stored beside whatever they protect.
    public struct ScryptParameters: Sendable, Hashable, Codable {
        /// CPU/memory cost, a power of two.
        public var n: UInt64
        public var r: UInt32
        public var p: UInt32

        public init(n: UInt64, r: UInt32, p: UInt32) {
            self.n = n
            self.r = r
            self.p = p
        }

        /// The default for interactive unlocks: N = 2^17, r = 8, p = 1 (128 MiB, about
        /// a third of a second here).
        public static let interactive = ScryptParameters(n: 1 << 17, r: 8, p: 1)
        /// Cheap parameters for tests and vectors only.
        public static let testing = ScryptParameters(n: 1 << 10, r: 8, p: 1)

        /// Memory scrypt needs, in bytes (128 * N * r, plus p blocks).
        public var memoryByteCount: UInt64 { 128 &* n &* UInt64(r) &+ 128 &* UInt64(r) &* UInt64(p) }

        /// The most work GuestVault accepts, from its own settings or from a file:
        /// 128 * N * r * p at most 1 GiB (the default, N = 2^17, r = 8, p = 1, is 128 MiB).
        /// Stored parameters are hostile input; without this a slot could demand many
        /// GiB and minutes of CPU from whoever unlocks it.
        public static let maximumWork: UInt64 = 1 << 30

        /// Nil if acceptable, otherwise why not.
        public var problem: String? {
            guard n > 1, n & (n - 1) == 0, n <= 1 << 22 else { return "N = \(n) must be a power of two between 2 and 2^22" }
            guard (1...32).contains(r), (1...16).contains(p) else { return "r = \(r), p = \(p) are outside 1...32 and 1...16" }
            guard 128 * n * UInt64(r) * UInt64(p) <= Self.maximumWork else {
                return "N = 2^\(n.trailingZeroBitCount), r = \(r), p = \(p) need more than \(Self.maximumWork >> 20) MiB-equivalents of work"
            }
            return nil
        }
    }

    /// scrypt of `passphrase` and `salt`.
    public static func scrypt(
        passphrase: SecretBytes, salt: [UInt8], parameters: ScryptParameters, outputByteCount: Int
    ) throws -> SecretBytes {
        let operation = "scrypt"
        if let problem = parameters.problem {
            throw CryptoError(.invalidInput, operation: operation, reason: problem)
        }
        guard (1...1024).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation, reason: "output length \(outputByteCount) is outside 1...1024")
        }
        let kdf = try Algorithms.require(Algorithms.shared.scrypt, "SCRYPT", operation)
        var params: [Param] = [
            .octets(ParamName.salt, salt),
            .uint64(ParamName.scryptN, parameters.n),
            .uint32(ParamName.scryptR, parameters.r),
            .uint32(ParamName.scryptP, parameters.p),
            .uint64(ParamName.maxMemory, parameters.memoryByteCount + (1 << 20)),
        ]
        if passphrase.count > 0 { params.insert(.secret(ParamName.pass, passphrase), at: 0) }
        return try KDFRunner.derive(kdf: kdf, params: params, outputByteCount: outputByteCount, operation: operation)
    }

    /// PBKDF2 with HMAC-SHA-256 or HMAC-SHA-512.
    public enum PBKDF2Hash: Sendable { case sha256, sha512 }

    /// PBKDF2 of `passphrase` and `salt`.
    public static func pbkdf2(
        passphrase: SecretBytes, salt: [UInt8], iterations: UInt64, hash: PBKDF2Hash, outputByteCount: Int
    ) throws -> SecretBytes {
        let operation = "PBKDF2"
        guard iterations >= 1 else {
            throw CryptoError(.invalidInput, operation: operation, reason: "iteration count is zero")
        }
        guard (1...1024).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation, reason: "output length \(outputByteCount) is outside 1...1024")
        }
        let kdf = try Algorithms.require(Algorithms.shared.pbkdf2, "PBKDF2", operation)
        var params: [Param] = [
            .utf8(ParamName.digest, hash == .sha256 ? ParamName.sha256Name : ParamName.sha512Name),
            .octets(ParamName.salt, salt),
            .uint64(ParamName.iterations, iterations),
            // Interoperability formats (swtpm) use short salts: turn off SP 800-132's
            // lower-bound checks, which would refuse them.
            .int32(ParamName.pkcs5, 1),
        ]
        if passphrase.count > 0 { params.insert(.secret(ParamName.pass, passphrase), at: 0) }
        return try KDFRunner.derive(kdf: kdf, params: params, outputByteCount: outputByteCount, operation: operation)
    }
}
