internal import CLibCrypto

/// The one place that knows how OpenSSL is driven: the error queue, algorithm fetching
/// and parameter arrays. Every other file of this module goes through it.
enum OpenSSL {
    /// Drains OpenSSL's per-thread error queue into readable lines, oldest first.
    static func drainErrors() -> [String] {
        var lines: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            let text = buffer.withUnsafeMutableBufferPointer { pointer -> String in
                ERR_error_string_n(code, pointer.baseAddress, pointer.count)
                return String(cString: pointer.baseAddress!)
            }
            if lines.count < 8 { lines.append(text) }
        }
        return lines
    }

    /// Drops anything left on the error queue, so a later failure reports only its own.
    static func clearErrors() { ERR_clear_error() }

    /// Makes a ``CryptoError`` carrying the current OpenSSL error queue.
    static func error(
        _ code: CryptoError.Code, _ operation: String, _ reason: String,
        file: String = #fileID, line: Int = #line
    ) -> CryptoError {
        CryptoError(code, operation: operation, reason: reason, openSSLErrors: drainErrors(),
                    file: file, line: line)
    }

    /// Throws a library failure unless `result` is 1 (OpenSSL's success value).
    static func check(
        _ result: Int32, _ operation: String, _ step: @autoclosure () -> String,
        file: String = #fileID, line: Int = #line
    ) throws {
        if result != 1 {
            throw error(.libraryFailure, operation, "\(step()) returned \(result)", file: file, line: line)
        }
    }
}

/// C strings that OpenSSL keeps pointers to for the life of the process: algorithm
/// and parameter names. Allocated once, never freed.
struct CName: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<CChar>
    init(_ text: String) {
        let bytes = Array(text.utf8CString)
        pointer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        pointer.initialize(from: bytes, count: bytes.count)
    }
}

/// Algorithms fetched from the default provider once per process and reused. The
/// fetched objects are reference counted and immutable, and OpenSSL documents them as
/// safe to share between threads.
final class Algorithms: @unchecked Sendable {
    static let shared = Algorithms()

    let aes256GCM: OpaquePointer?
    let aes256WrapPad: OpaquePointer?
    let aes128CBC: OpaquePointer?
    let aes256CBC: OpaquePointer?
    let sha256: OpaquePointer?
    let sha512: OpaquePointer?
    let hmac: OpaquePointer?
    let hkdf: OpaquePointer?
    let kbkdf: OpaquePointer?
    let scrypt: OpaquePointer?
    let pbkdf2: OpaquePointer?

    private init() {
        aes256GCM = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
        aes256WrapPad = EVP_CIPHER_fetch(nil, "AES-256-WRAP-PAD", nil)
        aes128CBC = EVP_CIPHER_fetch(nil, "AES-128-CBC", nil)
        aes256CBC = EVP_CIPHER_fetch(nil, "AES-256-CBC", nil)
        sha256 = EVP_MD_fetch(nil, "SHA2-256", nil)
        sha512 = EVP_MD_fetch(nil, "SHA2-512", nil)
        hmac = EVP_MAC_fetch(nil, "HMAC", nil)
        hkdf = EVP_KDF_fetch(nil, "HKDF", nil)
        kbkdf = EVP_KDF_fetch(nil, "KBKDF", nil)
        scrypt = EVP_KDF_fetch(nil, "SCRYPT", nil)
        pbkdf2 = EVP_KDF_fetch(nil, "PBKDF2", nil)
        OpenSSL.clearErrors()
    }

    static func require(_ algorithm: OpaquePointer?, _ name: String, _ operation: String) throws -> OpaquePointer {
        guard let algorithm else {
            throw OpenSSL.error(.algorithmUnavailable, operation, "OpenSSL's default provider has no \(name)")
        }
        return algorithm
    }
}

/// Parameter names, kept as stable C strings (see ``CName``).
enum ParamName {
    static let mode = CName("mode")
    static let mac = CName("mac")
    static let digest = CName("digest")
    static let key = CName("key")
    static let salt = CName("salt")
    static let info = CName("info")
    static let useL = CName("use-l")
    static let useSeparator = CName("use-separator")
    static let pass = CName("pass")
    static let iterations = CName("iter")
    static let scryptN = CName("n")
    static let scryptR = CName("r")
    static let scryptP = CName("p")
    static let maxMemory = CName("maxmem_bytes")
    static let pkcs5 = CName("pkcs5")

    static let counter = CName("counter")
    static let hmacName = CName("HMAC")
    static let sha256Name = CName("SHA2-256")
    static let sha512Name = CName("SHA2-512")
    static let extractOnly = CName("EXTRACT_ONLY")
    static let expandOnly = CName("EXPAND_ONLY")
    static let extractAndExpand = CName("EXTRACT_AND_EXPAND")
}

/// One OSSL_PARAM to build: a UTF-8 name, some octets, or an integer.
enum Param {
    case utf8(CName, CName)
    case octets(CName, [UInt8])
    case secret(CName, SecretBytes)
    case int32(CName, Int32)
    case uint64(CName, UInt64)
    case uint32(CName, UInt32)
}

extension Param {
    /// Builds an OSSL_PARAM array for `params` in one scratch buffer that is cleansed
    /// and freed when `body` returns; OpenSSL copies what it keeps.
    static func withArray<R>(
        _ params: [Param], _ body: (UnsafeMutablePointer<OSSL_PARAM>) throws -> R
    ) rethrows -> R {
        var size = 0
        for param in params {
            switch param {
            case .utf8: break
            case .octets(_, let bytes): size += (bytes.count + 7) & ~7
            case .secret(_, let secret): size += (secret.count + 7) & ~7
            case .int32, .uint32: size += 8
            case .uint64: size += 8
            }
        }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 8)
        let array = UnsafeMutablePointer<OSSL_PARAM>.allocate(capacity: params.count + 1)
        defer {
            OPENSSL_cleanse(scratch, max(size, 1))
            scratch.deallocate()
            array.deallocate()
        }
        var offset = 0
        for (index, param) in params.enumerated() {
            let slot = scratch + offset
            switch param {
            case .utf8(let name, let value):
                array[index] = OSSL_PARAM_construct_utf8_string(name.pointer, value.pointer, 0)
            case .octets(let name, let bytes):
                bytes.withUnsafeBytes { source in
                    if let base = source.baseAddress { slot.copyMemory(from: base, byteCount: source.count) }
                }
                array[index] = OSSL_PARAM_construct_octet_string(name.pointer, slot, bytes.count)
                offset += (bytes.count + 7) & ~7
            case .secret(let name, let secret):
                secret.withUnsafeBytes { source in
                    if let base = source.baseAddress { slot.copyMemory(from: base, byteCount: source.count) }
                }
                array[index] = OSSL_PARAM_construct_octet_string(name.pointer, slot, secret.count)
                offset += (secret.count + 7) & ~7
            case .int32(let name, let value):
                let typed = slot.bindMemory(to: Int32.self, capacity: 1)
                typed.pointee = value
                array[index] = OSSL_PARAM_construct_int32(name.pointer, typed)
                offset += 8
            case .uint32(let name, let value):
                let typed = slot.bindMemory(to: UInt32.self, capacity: 1)
                typed.pointee = value
                array[index] = OSSL_PARAM_construct_uint32(name.pointer, typed)
                offset += 8
            case .uint64(let name, let value):
                let typed = slot.bindMemory(to: UInt64.self, capacity: 1)
                typed.pointee = value
                array[index] = OSSL_PARAM_construct_uint64(name.pointer, typed)
                offset += 8
            }
        }
        array[params.count] = OSSL_PARAM_construct_end()
        return try body(array)
    }
}
