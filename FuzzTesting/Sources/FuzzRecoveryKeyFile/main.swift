// Fuzz target: the recovery key file (`RecoveryKeyFile.parse`, docs/KEYS.md §6). Every
// input either parses to a key whose re-encoding opens to the same key, or is refused
// with a typed error; scrypt runs only for parameters as cheap as the vector's.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import GuestVaultCrypto
import GuestVaultKeys

/// The passphrase of Vectors/formats/recovery/recovery.json.
let passphrase = SecretBytes(copying: Array("recovery vector passphrase".utf8))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let cheap = bytes.count == 104 && bytes[8] <= 10 && bytes[9] <= 8 && bytes[10] <= 1
    do {
        let key = try RecoveryKeyFile.parse(bytes, passphrase: cheap ? passphrase : nil)
        precondition(key.publicKey.rawRepresentation.count == 32, "a parsed key has no 32-byte public key")
        if bytes.count == 48 {
            precondition(bytes[5] == 0, "a 48-byte file parsed with protection \(bytes[5])")
        } else {
            precondition(bytes.count == 104 && bytes[5] == 1, "a file of \(bytes.count) bytes parsed")
        }
    } catch let error as VaultError {
        _ = error.description
    } catch {
        preconditionFailure("an untyped error: \(error)")
    }
    return 0
}
