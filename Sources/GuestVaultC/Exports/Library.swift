import GuestVaultCore

/// The library's version (semantic; the ABI version is separate).
let libraryVersion: StaticString = "1.0.0"
/// GV_ABI_VERSION.
let abiVersion: UInt32 = 1

/// GV_CAP_* bits.
enum Capability {
    static let fileVault: UInt64 = 1 << 0
    static let pkcs11Vault: UInt64 = 1 << 1
    static let streams: UInt64 = 1 << 2
    static let blobSeal: UInt64 = 1 << 3
    static let rekey: UInt64 = 1 << 4
    static let vaultPassphrase: UInt64 = 1 << 5
    static let all = fileVault | pkcs11Vault | streams | blobSeal | rekey | vaultPassphrase
}

private func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("gv_version")
public func gv_version() -> UnsafePointer<CChar> {
    cString(libraryVersion)
}

@_cdecl("gv_abi_version")
public func gv_abi_version() -> UInt32 {
    abiVersion
}

@_cdecl("gv_capabilities")
public func gv_capabilities() -> UInt64 {
    Capability.all
}

@_cdecl("gv_strerror")
public func gv_strerror(_ status: Int32) -> UnsafePointer<CChar> {
    if status == Status.ok { return cString("success") }
    switch Status.category(status) {
    case .failure: return cString("unexpected failure")
    case .usage: return cString("invalid argument or usage")
    case .notFound: return cString("not found")
    case .alreadyExists: return cString("already exists")
    case .permission: return cString("unsafe ownership or permissions")
    case .locked: return cString("locked by another process")
    case .keys: return cString("no key opens it")
    case .integrity: return cString("integrity check failed (corrupt or tampered)")
    case .rollback: return cString("rollback: older than the vault has seen")
    case .limit: return cString("limit reached")
    case .io: return cString("input/output error")
    case .peer: return cString("peer or callback failed")
    case .timeout: return cString("timed out")
    case .unsupported: return cString("not supported")
    case .policyMismatch: return cString("policy mismatch")
    case nil: return cString("unknown status code")
    }
}

@_cdecl("gv_last_error_message")
public func gv_last_error_message() -> UnsafePointer<CChar> {
    LastError.current ?? cString("")
}

@_cdecl("gv_buffer_free")
public func gv_buffer_free(_ buffer: UnsafeMutableRawPointer?) {
    guard let buffer else { return }
    CBuffer.free(buffer)
}
