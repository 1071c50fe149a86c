import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem

/// swtpm's `--migration-key` option, spelled as swtpm spells it:
/// `file=PATH|fd=N|pwdfile=PATH|pwdfd=N[,mode=aes-128-cbc|aes-256-cbc][,format=hex|binary][,kdf=sha512|pbkdf2][,remove=true|false]`.
/// With it, `serve` seals its GET_STATEBLOB blobs with swtpm's migration encryption
/// (AES-CBC and HMAC-SHA256, docs/SWTPM.md) and opens swtpm's, so a VM migrates between
/// swtpm and GuestVault when both hold the same key. Holds no secret; ``load()`` reads it.
public struct MigrationKeySpec: Sendable, Hashable, CustomStringConvertible {
    public enum Source: Sendable, Hashable {
        case keyFile(String)
        case keyDescriptor(Int32)
        case passphraseFile(String)
        case passphraseDescriptor(Int32)
    }

    public var source: Source
    public var mode: SwtpmKey.Mode
    public var format: SwtpmKey.KeyFileFormat
    public var kdf: SwtpmKey.KDF
    public var remove: Bool

    public init(source: Source, mode: SwtpmKey.Mode = .swtpmDefault, format: SwtpmKey.KeyFileFormat = .hex,
                kdf: SwtpmKey.KDF = .pbkdf2, remove: Bool = false) {
        self.source = source
        self.mode = mode
        self.format = format
        self.kdf = kdf
        self.remove = remove
    }

    public var description: String {
        switch source {
        case .keyFile(let path): "file=\(path),mode=\(mode.rawValue),format=\(format.rawValue)"
        case .keyDescriptor(let fd): "fd=\(fd),mode=\(mode.rawValue),format=\(format.rawValue)"
        case .passphraseFile(let path): "pwdfile=\(path),mode=\(mode.rawValue),kdf=\(kdf.rawValue)"
        case .passphraseDescriptor(let fd): "pwdfd=\(fd),mode=\(mode.rawValue),kdf=\(kdf.rawValue)"
        }
    }

    /// Parses swtpm's spelling. A bare first word is a key file, as swtpm takes it.
    public init(parsing text: String) throws {
        func fail(_ reason: String) -> SwtpmFormatError {
            SwtpmFormatError(.badKeyOption, file: "--migration-key", offset: nil, "\(reason) in `--migration-key \(text)`")
        }
        var source: Source?
        var settings: [String: String] = [:]
        for (index, part) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            guard let equals = part.firstIndex(of: "=") else {
                guard index == 0, !part.isEmpty else { throw fail("`\(part)` is not name=value") }
                source = .keyFile(String(part))
                continue
            }
            let name = String(part[..<equals]), value = String(part[part.index(after: equals)...])
            guard !value.isEmpty else { throw fail("\(name)= has no value") }
            switch name {
            case "file", "fd", "pwdfile", "pwdfd":
                guard source == nil else { throw fail("the key is given twice (one of file=, fd=, pwdfile=, pwdfd=)") }
                if name == "fd" || name == "pwdfd" {
                    guard let fd = Int32(value), fd >= 0 else { throw fail("\(name)= takes a file descriptor number") }
                    source = name == "fd" ? .keyDescriptor(fd) : .passphraseDescriptor(fd)
                } else {
                    source = name == "file" ? .keyFile(value) : .passphraseFile(value)
                }
            case "format", "mode", "kdf", "remove":
                guard settings[name] == nil else { throw fail("\(name)= is given twice") }
                settings[name] = value
            default:
                throw fail("unknown setting `\(name)` (known: file, fd, pwdfile, pwdfd, mode, format, kdf, remove)")
            }
        }
        guard let source else { throw fail("no key is named (file=, fd=, pwdfile= or pwdfd=)") }
        var spec = MigrationKeySpec(source: source)
        if let name = settings["mode"] {
            guard let mode = SwtpmKey.Mode(swtpmName: name) else { throw fail("unknown mode `\(name)` (aes-128-cbc or aes-256-cbc)") }
            spec.mode = mode
        }
        if let name = settings["format"] {
            guard let format = SwtpmKey.KeyFileFormat(rawValue: name) else { throw fail("unknown format `\(name)` (hex or binary)") }
            spec.format = format
        }
        if let name = settings["kdf"] {
            guard let kdf = SwtpmKey.KDF(rawValue: name) else { throw fail("unknown kdf `\(name)` (pbkdf2 or sha512)") }
            spec.kdf = kdf
        }
        if let value = settings["remove"] {
            switch value {
            case "true", "yes", "1": spec.remove = true
            case "false", "no", "0": spec.remove = false
            default: throw fail("remove= takes true or false")
            }
        }
        switch source {
        case .keyFile, .keyDescriptor:
            if settings["kdf"] != nil { throw fail("kdf= is for pwdfile= and pwdfd=, not a key") }
        case .passphraseFile, .passphraseDescriptor:
            if settings["format"] != nil { throw fail("format= is for file= and fd=, not a passphrase") }
        }
        self = spec
    }

    /// Reads the key (or passphrase) and makes the key as swtpm does. A descriptor is read
    /// to its end and closed.
    public func load() throws -> SwtpmKey {
        switch source {
        case .keyFile(let path):
            return try SwtpmKey.Option(source: .keyFile(path, format), mode: mode, remove: remove).load()
        case .passphraseFile(let path):
            return try SwtpmKey.Option(source: .passphraseFile(path, kdf), mode: mode, remove: remove).load()
        case .keyDescriptor(let fd):
            var bytes = try Self.read(fd, limit: SwtpmKey.keyFileLimit)
            defer { SwtpmKey.zero(&bytes) }
            return try SwtpmKey.fromKeyFile(bytes, format: format, mode: mode, file: "fd=\(fd)")
        case .passphraseDescriptor(let fd):
            var bytes = try Self.read(fd, limit: SwtpmKey.passphraseFileLimit)
            defer { SwtpmKey.zero(&bytes) }
            return try SwtpmKey.fromPassphrase(SecretBytes(copying: bytes), kdf: kdf, mode: mode, file: "pwdfd=\(fd)")
        }
    }

    /// Deletes the key file if `remove=true` was given (descriptors have nothing to delete).
    public func removeFileIfAsked() throws {
        switch source {
        case .keyFile(let path): try SwtpmKey.Option(source: .keyFile(path, format), mode: mode, remove: remove).removeFileIfAsked()
        case .passphraseFile(let path): try SwtpmKey.Option(source: .passphraseFile(path, kdf), mode: mode, remove: remove).removeFileIfAsked()
        case .keyDescriptor, .passphraseDescriptor: break
        }
    }

    static func read(_ fd: Int32, limit: Int) throws -> [UInt8] {
        defer { _ = close(fd) }
        let data: [UInt8]
        do {
            data = try Descriptors.readToEnd(fd, limit: limit)
        } catch {
            throw SwtpmFormatError(.io, file: "fd=\(fd)", offset: nil, "cannot read the migration key from descriptor \(fd)",
                                   underlying: error)
        }
        guard data.count <= limit else {
            throw SwtpmFormatError(.badKeyFile, file: "fd=\(fd)", offset: nil, "descriptor \(fd) holds more than \(limit) bytes")
        }
        return data
    }
}
