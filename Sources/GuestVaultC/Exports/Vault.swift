import Foundation
import GuestVaultCrypto
import GuestVaultKeys

/// The longest passphrase accepted (bytes).
let maximumPassphrase = 4096

private func passphrase(_ pointer: UnsafePointer<UInt8>?, _ count: UInt) throws -> SecretBytes? {
    guard pointer != nil else {
        guard count == 0 else { throw CAPIError.usage("passphrase is NULL but passphrase_len is \(count)") }
        return nil
    }
    let n = try Arguments.length(count, "passphrase_len", limit: maximumPassphrase)
    // Copied straight into SecretBytes: no intermediate array keeps the secret.
    return SecretBytes(copying: UnsafeBufferPointer(start: pointer, count: n))
}

private func publish(_ vault: KeyVault, _ out: UnsafeMutablePointer<OpaquePointer?>) {
    out.pointee = Handles.register(VaultHandle(vault))
}

@_cdecl("gv_vault_create_file")
public func gv_vault_create_file(
    _ path: UnsafePointer<CChar>?, _ secret: UnsafePointer<UInt8>?, _ secretLength: UInt, _ flags: UInt32,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        let path = try Arguments.string(path, "path")
        let out = try Arguments.output(out, "out")
        try Arguments.flags(flags, allowed: 1)
        let phrase = try passphrase(secret, secretLength)
        let scrypt: PasswordKDF.ScryptParameters = flags & 1 != 0 ? .testing : .interactive
        publish(try KeyVault.createFileVault(at: path, passphrase: phrase, scrypt: scrypt), out)
    }
}

@_cdecl("gv_vault_create_pkcs11")
public func gv_vault_create_pkcs11(
    _ path: UnsafePointer<CChar>?, _ module: UnsafePointer<CChar>?, _ token: UnsafePointer<CChar>?,
    _ pinFile: UnsafePointer<CChar>?, _ keyLabel: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        let path = try Arguments.string(path, "path")
        let module = try Arguments.string(module, "module")
        let token = try Arguments.string(token, "token")
        let pinFile = try Arguments.string(pinFile, "pin_file")
        let label = try Arguments.optionalString(keyLabel, "key_label") ?? "guestvault-root"
        let out = try Arguments.output(out, "out")
        publish(try KeyVault.createPKCS11Vault(at: path, module: module, token: token, pinFile: pinFile, keyLabel: label), out)
    }
}

@_cdecl("gv_vault_open")
public func gv_vault_open(
    _ path: UnsafePointer<CChar>?, _ secret: UnsafePointer<UInt8>?, _ secretLength: UInt,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        let path = try Arguments.string(path, "path")
        let out = try Arguments.output(out, "out")
        let phrase = try passphrase(secret, secretLength)
        publish(try KeyVault.open(at: path, passphrase: phrase), out)
    }
}

@_cdecl("gv_vault_counter")
public func gv_vault_counter(
    _ handle: OpaquePointer?, _ vm: UnsafePointer<CChar>?, _ generation: UnsafeMutablePointer<UInt64>?,
    _ known: UnsafeMutablePointer<Int32>?
) -> Int32 {
    boundary {
        let vault = try Handles.lookup(handle, VaultHandle.self, "vault").vault
        let vm = try Arguments.uuid(vm)
        let generation = try Arguments.output(generation, "generation")
        let known = try Arguments.output(known, "known")
        let latest = try vault.counters.latest(vm: vm)
        generation.pointee = latest ?? 0
        known.pointee = latest == nil ? 0 : 1
    }
}

@_cdecl("gv_vault_close")
public func gv_vault_close(_ handle: OpaquePointer?) -> Int32 {
    guard let handle else { return Status.ok }
    return boundary {
        let vault = try Handles.remove(handle, VaultHandle.self, "vault").vault
        try vault.counters.flush()
    }
}
