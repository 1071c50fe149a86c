// Fuzz target: the key protector slot list (`KeyProtectorSet.parse`), the part of every
// commit record that says how the container's key is wrapped. What parses must encode
// back to the same bytes; parsed slots are then tried with the credentials of
// Vectors/formats/keys.json, so that mutated slots reach the key unwrapping code.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys

/// The fixed inputs of Vectors/formats/keys.json: its VM, recipient private key and passphrase.
let vm = UUID(uuidString: "6f1d2c3b-4a59-4e68-8d7c-0b1a2f3e4d5c")!
let recipient: X25519.PrivateKey = {
    do {
        return try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: (0x40...0x5f).map { UInt8($0) }))
    } catch {
        fatalError("fuzz harness: the recipient key of keys.json does not load: \(error)")
    }
}()
let passphrase = SecretBytes(copying: Array("correct horse battery staple".utf8))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let set = try? KeyProtectorSet.parse(bytes) else { return 0 }
    precondition(set.encoded() == bytes, "a parsed slot list does not encode to the bytes it was parsed from")
    precondition((1...KeyProtectorSet.maximumCount).contains(set.slots.count), "a slot list of \(set.slots.count) slots was accepted")
    for slot in set.slots { _ = slot.summary }
    _ = try? set.unwrap(vm: vm, with: UnlockCredentials(vault: FixedVault.keyVectors))
    _ = try? set.unwrap(vm: vm, with: UnlockCredentials(recipientKeys: [recipient]))
    // scrypt costs what the slot says (up to 2^22 x r 255); only try slots as cheap as
    // the vector's, or a run would measure scrypt instead of the parser.
    let cheap = set.slots.allSatisfy { slot in
        guard case .passphrase(let log2N, let r, let p, _, _) = slot else { return true }
        return log2N <= 10 && r <= 8 && p <= 1
    }
    if cheap { _ = try? set.unwrap(vm: vm, with: UnlockCredentials(passphrase: passphrase)) }
    return 0
}
