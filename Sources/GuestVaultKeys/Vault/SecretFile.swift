import GuestVaultCore
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
        var bytes = try readPrivate(path, what: what, limit: limit,
                                    missing: VaultError(.vaultNotFound, subject: path, reason: "no \(what) file here; \(hint) and run `chmod 600 \(path)`"))
        defer { zero(&bytes) }
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

    /// The bytes of a file that holds key material, secret or sealed: refused with
    /// `insecurePermissions` if it is not a regular file (a symlink, FIFO, device or
    /// directory is never opened or waited on), if another user owns it, or if group or
    /// others can read or write it (naming `chmod 600`); `missing` if it does not exist;
    /// `tooLarge` (`.io` unless a format says the file cannot be this long: `.corrupt`)
    /// if it is over `limit` bytes. Opened with O_NOFOLLOW | O_NONBLOCK. The one reader
    /// of the vault's private files; a caller holding secret bytes zeroes them with
    /// ``zero(_:)``.
    static func readPrivate(_ path: String, what: String, limit: Int, sealed: Bool = false, tooLarge: ErrorCode = .io,
                            missing: @autoclosure () -> VaultError) throws -> [UInt8] {
        guard let info = try TrustedPath.status(path) else { throw missing() }
        guard info.isRegular else {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the \(what) file is \(info.kindName), not a regular file; nothing was read from it")
        }
        guard TrustedPath.isTrusted(owner: info.owner) else {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the \(what) file is owned by uid \(info.owner), not by this user or root, so that user controls it")
        }
        if info.mode & 0o077 != 0 {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the \(what) file has mode \(String(info.mode, radix: 8)), so other users can read or change it; run `chmod 600 \(path)`"
                                 + (sealed ? "" : " (and consider the \(what) exposed)"))
        }
        let file: OpenFile
        do {
            file = try SafeOpen.existing(path, mode: .readOnly)
        } catch {
            throw VaultError.file(path, "could not open the \(what) file", error)
        }
        var bytes: [UInt8]
        do {
            bytes = try file.read(at: 0, count: limit + 1)
        } catch {
            throw VaultError.file(path, "could not read the \(what) file", error)
        }
        guard bytes.count <= limit else {
            zero(&bytes)
            throw VaultError(tooLarge, subject: path, reason: "larger than \(limit) bytes, so not a \(what) file")
        }
        return bytes
    }

    /// Overwrites `bytes` with zeros (for secret bytes read from a file).
    static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }
}
