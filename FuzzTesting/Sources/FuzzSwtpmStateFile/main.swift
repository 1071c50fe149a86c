// Fuzz target: the swtpm state file reader (`SwtpmStateFile.decode`), used by
// `guestvault import-swtpm` and for SET_STATEBLOB blobs. The first input byte chooses how
// the rest is read: bits 0-1 the state key (none, a fixed AES-128 key, a fixed AES-256
// key), bit 2 the form (state file, control-channel blob), bits 3-4 the migration key.
// What decodes must encode again (as swtpm would write it) and decode to the same data.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import GuestVaultCrypto
import GuestVaultCore
import GuestVaultTPM

/// The fixed keys; the seeds are encrypted with them.
enum Keys {
    static let aes128: SwtpmKey = make((0..<16).map { UInt8(0xa0 + $0) }, .aes128CBC)
    static let aes256: SwtpmKey = make((0..<32).map { UInt8(0xc0 + $0) }, .aes256CBC)

    static func make(_ bytes: [UInt8], _ mode: SwtpmKey.Mode) -> SwtpmKey {
        do {
            return try SwtpmKey(secret: SecretBytes(copying: bytes), mode: mode)
        } catch {
            fatalError("fuzz harness: the fixed swtpm key does not load: \(error)")
        }
    }

    static func choose(_ bits: UInt8) -> SwtpmKey? {
        switch bits & 3 {
        case 1: aes128
        case 2: aes256
        default: nil
        }
    }
}

struct Choice {
    var key: SwtpmKey?
    var migrationKey: SwtpmKey?
    var form: SwtpmStateFile.Form

    init(_ byte: UInt8) {
        key = Keys.choose(byte)
        form = byte & 4 == 0 ? .stateFile : .controlChannelBlob
        migrationKey = Keys.choose(byte >> 3)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let choice = Choice(data[0])
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let contents: SwtpmStateFile.Contents
    do {
        contents = try SwtpmStateFile.decode(bytes, file: "tpm2-00.permall", key: choice.key,
                                             migrationKey: choice.migrationKey, form: choice.form)
    } catch let error as SwtpmFormatError {
        _ = error.description
        return 0
    } catch {
        preconditionFailure("SwtpmStateFile.decode threw something other than a SwtpmFormatError: \(error)")
    }
    precondition(contents.fileByteCount == bytes.count, "the decoded size is not the file's")
    if contents.layout == .v2 {
        precondition((contents.encryption != nil) == contents.flags.contains(.encrypted), "the encryption reported does not match the flags")
    }
    // Write it again as swtpm would and read it back.
    let key = contents.encryption == nil ? nil : choice.key
    let again: [UInt8]
    do {
        again = choice.form == .stateFile
            ? try SwtpmStateFile.encode(contents.payload, key: key)
            : try SwtpmStateFile.encodeBlob(contents.payload, key: key, migrationKey: choice.migrationKey)
    } catch {
        return 0   // too large to write back: the cap applies to writing too
    }
    do {
        let reread = try SwtpmStateFile.decode(again, file: "re-encoded", key: key, migrationKey: choice.migrationKey, form: choice.form)
        precondition(reread.payload == contents.payload, "a re-encoded state file reads back different data")
    } catch {
        preconditionFailure("a state file written from decoded data does not decode: \(error)")
    }
    return 0
}

/// `GUESTVAULT_FUZZ_MAKE_SEEDS=DIR FuzzSwtpmStateFile` writes the seeds into DIR and exits
/// (FuzzTesting/make-corpus.sh): each layout the reader knows, with the fixed keys.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    guard let directory = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_MAKE_SEEDS"] else { return 0 }
    // Shaped like a libtpms blob: a big-endian u16 version first, so the first byte is 0.
    let payload: [UInt8] = [0x00, 0x02] + (0..<94).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ 3) }
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func save(_ name: String, _ choice: UInt8, _ bytes: [UInt8]) throws {
            try Data([choice] + bytes).write(to: URL(fileURLWithPath: "\(directory)/seed-\(name)"))
            print("seed: \(directory)/seed-\(name): \(bytes.count + 1) bytes")
        }
        try save("plain", 0, SwtpmStateFile.encode(payload, key: nil))
        try save("aes128", 1, SwtpmStateFile.encode(payload, key: Keys.aes128))
        try save("aes256", 2, SwtpmStateFile.encode(payload, key: Keys.aes256))
        try save("blob-plain", 4, SwtpmStateFile.encodeBlob(payload, key: nil))
        try save("blob-aes128", 5, SwtpmStateFile.encodeBlob(payload, key: Keys.aes128))
        try save("blob-migration-aes256", 4 | 2 << 3, SwtpmStateFile.encodeBlob(payload, key: nil, migrationKey: Keys.aes256))
        try save("blob-aes256-migration-aes128", 6 | 1 << 3,
                 SwtpmStateFile.encodeBlob(payload, key: Keys.aes256, migrationKey: Keys.aes128))
        try save("headerless-plain", 0, payload)
        // swtpm before 0.2: AES-CBC (zero IV, padded to the key length) over SHA-256(data) || data.
        let old = try AESCBC.encrypt(try SHA256.hash(payload) + payload, key: Keys.aes256.secret,
                                     iv: [UInt8](repeating: 0, count: AESCBC.ivByteCount), padding: .pkcs7Multiple(32))
        try save("headerless-aes256", 2, old)
    } catch {
        fatalError("could not write the seeds: \(error)")
    }
    exit(0)
}
