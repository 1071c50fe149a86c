public import GuestVaultCrypto
import GuestVaultSystem

/// Small secrets kept in files (a token PIN, a vault passphrase, a migration key): read
/// only from a file that neither group nor others can read or write, at most `limit`
/// bytes, one trailing newline (`\n` or `\r\n`) removed, never empty. The read buffer is
/// zeroed before it is released; the secret lives on only in ``SecretBytes``.
public enum SecretFile {
    /// - Parameters:
    ///   - what: names the secret in messages ("PIN", "passphrase").
    ///   - hint: what to write into the file, for the "missing" and "empty" messages.
    ///   - singleLine: refuse a file of more than one line.
    public static func read(_ path: String, what: String, hint: String, singleLine: Bool = true, limit: Int = 4096) throws -> SecretBytes {
        let permissions: (mode: UInt32, owner: UInt32)
        do {
            permissions = try FileSystem.permissions(path)
        } catch let error as SystemError where error.isNotFound {
            throw VaultError(.io, subject: path, reason: "no \(what) file here; \(hint) and run `chmod 600 \(path)`")
        } catch {
            throw VaultError(.io, subject: path, reason: "could not read the \(what) file: \(error)")
        }
        if permissions.mode & 0o077 != 0 {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the \(what) file has mode \(String(permissions.mode, radix: 8)), so other users can read or change it; run `chmod 600 \(path)` (and consider the \(what) exposed)")
        }
        var bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path, limit: limit)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not read the \(what) file: \(error)")
        }
        defer { bytes.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        var end = bytes.count
        if end > 0 && bytes[end - 1] == 0x0a {
            end -= 1
            if end > 0 && bytes[end - 1] == 0x0d { end -= 1 }
        }
        guard end > 0 else {
            throw VaultError(.invalidArgument, subject: path, reason: "the \(what) file is empty; \(hint)")
        }
        if singleLine {
            guard !bytes[0..<end].contains(0x0a) else {
                throw VaultError(.invalidArgument, subject: path, reason: "the \(what) file holds more than one line; it must hold only the \(what)")
            }
        }
        return SecretBytes(copying: bytes[0..<end])
    }
}
