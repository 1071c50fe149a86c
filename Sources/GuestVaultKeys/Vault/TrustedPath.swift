#if canImport(Glibc)
import Glibc
import GuestVaultCore
#endif
import GuestVaultSystem

/// The checks every path the vault follows gets, in the spirit of OpenSSH's
/// StrictModes: what the vault reads must be owned by this (effective) user or root and
/// not writable by group or others, and so must every directory above it (a sticky
/// directory such as /tmp is allowed above: others cannot rename what is in it). A file
/// another user could swap or rewrite is refused with an error naming the path,
/// before anything in it is used.
enum TrustedPath {
    struct Status {
        let kind: UInt32
        let mode: UInt32
        let owner: UInt32

        var isRegular: Bool { kind == UInt32(S_IFREG) }
        var isDirectory: Bool { kind == UInt32(S_IFDIR) }
        var writableByOthers: Bool { mode & 0o022 != 0 }
        var isSticky: Bool { mode & UInt32(S_ISVTX) != 0 }

        var kindName: String {
            switch kind {
            case UInt32(S_IFREG): "a regular file"
            case UInt32(S_IFDIR): "a directory"
            case UInt32(S_IFLNK): "a symbolic link"
            case UInt32(S_IFIFO): "a FIFO"
            case UInt32(S_IFCHR), UInt32(S_IFBLK): "a device"
            case UInt32(S_IFSOCK): "a socket"
            default: "not a regular file"
            }
        }
    }

    /// The status of `path` itself (a symlink is reported as one), nil if nothing is there.
    static func status(_ path: String) throws -> Status? {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT { return nil }
            throw VaultError(.io, subject: path, reason: "could not check the path: \(String(cString: strerror(code)))")
        }
        return Status(kind: UInt32(info.st_mode) & UInt32(S_IFMT), mode: UInt32(info.st_mode) & 0o7777, owner: UInt32(info.st_uid))
    }

    /// Whether `owner` is trusted: this process's effective user, or root.
    static func isTrusted(owner: UInt32) -> Bool { owner == 0 || owner == UInt32(geteuid()) }

    /// The canonical absolute form of an existing path (symlinks resolved).
    static func canonical(_ path: String) throws -> String {
        guard let resolved = realpath(path, nil) else {
            let code = errno
            throw VaultError(code == ENOENT ? ErrorCode.vaultNotFound : ErrorCode.io, subject: path, reason: "could not resolve the path: \(String(cString: strerror(code)))")
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Every directory above `path` (canonical), from `/` down: owned by this user or
    /// root, and not writable by group or others unless sticky.
    static func checkAncestors(of path: String, what: String) throws {
        let canonicalPath = try canonical(path)
        var components = canonicalPath.split(separator: "/").map(String.init)
        components.removeLast()
        var current = ""
        for component in [""] + components {
            current = component.isEmpty ? "/" : (current == "/" ? "/" + component : current + "/" + component)
            guard let info = try status(current) else { continue }
            if !isTrusted(owner: info.owner) {
                throw VaultError(.insecurePermissions, subject: path,
                                 reason: "the \(what) is inside \(current), which uid \(info.owner) owns; that user could replace it. Move it under a directory owned by root or by this user")
            }
            if info.writableByOthers && !info.isSticky {
                throw VaultError(.insecurePermissions, subject: path,
                                 reason: "the \(what) is inside \(current), which group or others can write (mode \(String(info.mode, radix: 8))); run `chmod go-w \(current)`")
            }
        }
    }

    /// A vault directory: a directory (not a symlink to one is fine: the target is
    /// checked), owned by this user or root, mode 0700 or stricter, under trusted
    /// directories; and every entry in it (and in its `counters/`) owned by this user or
    /// root, not writable by group or others, and a regular file or directory.
    static func checkVaultDirectory(_ path: String) throws {
        try checkAncestors(of: path, what: "vault directory")
        let directory = try canonical(path)
        guard let info = try status(directory) else {
            throw VaultError(.vaultNotFound, subject: path, reason: "no vault directory here; create one with `guestvault vault init --vault \(path)`")
        }
        guard info.isDirectory else {
            throw VaultError(.vaultNotFound, subject: path, reason: "this is \(info.kindName), not a vault directory")
        }
        guard isTrusted(owner: info.owner) else {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the vault directory is owned by uid \(info.owner), not by this user or root; that user could swap its root key or vault.json")
        }
        guard info.mode & 0o077 == 0 else {
            throw VaultError(.insecurePermissions, subject: path,
                             reason: "the vault directory has mode \(String(info.mode, radix: 8)); run `chmod 700 \(path)`")
        }
        try checkEntries(of: directory, shownAs: path, depth: 1)
    }

    private static func checkEntries(of directory: String, shownAs shown: String, depth: Int) throws {
        let names: [String]
        do {
            names = try DirectoryEntry.names(of: directory)
        } catch {
            throw VaultError(.io, subject: shown, reason: "could not list the vault directory", underlying: error)
        }
        for name in names {
            let full = directory + "/" + name
            guard let info = try status(full) else { continue }
            let shownPath = shown.hasSuffix("/") ? shown + name : shown + "/" + name
            guard info.isRegular || info.isDirectory else {
                throw VaultError(.insecurePermissions, subject: shownPath,
                                 reason: "\(info.kindName) in a vault directory; a vault holds only its own regular files. Remove it")
            }
            guard isTrusted(owner: info.owner) else {
                throw VaultError(.insecurePermissions, subject: shownPath,
                                 reason: "owned by uid \(info.owner), not by this user or root; remove it or `chown` it after checking its content")
            }
            guard !info.writableByOthers else {
                throw VaultError(.insecurePermissions, subject: shownPath,
                                 reason: "group or others can write it (mode \(String(info.mode, radix: 8))); run `chmod go-w \(shownPath)` after checking its content")
            }
            if info.isDirectory && depth > 0 {
                try checkEntries(of: full, shownAs: shownPath, depth: depth - 1)
            }
        }
    }

    /// A PKCS#11 module (code this process will run, as root): an absolute path to a
    /// regular file owned by root, not writable by group or others, in directories
    /// owned by root and not writable by group or others.
    static func checkModule(_ module: String, subject: String) throws {
        guard module.hasPrefix("/") else {
            throw VaultError(.moduleUnavailable, subject: subject,
                             reason: "the PKCS#11 module path must be absolute (for example /usr/lib/softhsm/libsofthsm2.so), so no library search path can substitute another library")
        }
        let resolved: String
        do {
            resolved = try canonical(module)
        } catch {
            throw VaultError(.moduleUnavailable, subject: subject,
                             reason: "cannot open the module \(module): No such file or directory; install the token vendor's PKCS#11 library there (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)",
                             underlying: error)
        }
        guard let info = try status(resolved), info.isRegular else {
            throw VaultError(.insecurePermissions, subject: subject, reason: "the PKCS#11 module \(module) is not a regular file")
        }
        guard info.owner == 0, !info.writableByOthers else {
            throw VaultError(.insecurePermissions, subject: subject,
                             reason: "the PKCS#11 module \(resolved) is owned by uid \(info.owner) with mode \(String(info.mode, radix: 8)); a module must be owned by root and not writable by group or others, since loading it runs its code in this process")
        }
        var current = ""
        for component in resolved.split(separator: "/").dropLast() {
            current += "/" + component
            guard let directory = try status(current) else { continue }
            guard directory.owner == 0, !directory.writableByOthers else {
                throw VaultError(.insecurePermissions, subject: subject,
                                 reason: "the PKCS#11 module \(module) is in \(current), owned by uid \(directory.owner) with mode \(String(directory.mode, radix: 8)); modules are loaded only from directories owned by root and not writable by group or others")
            }
        }
    }
}
