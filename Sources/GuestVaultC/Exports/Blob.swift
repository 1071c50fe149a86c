import GuestVaultCore

@_cdecl("gv_blob_seal")
public func gv_blob_seal(
    _ vaultHandle: OpaquePointer?, _ vm: UnsafePointer<CChar>?, _ context: UnsafePointer<CChar>?,
    _ data: UnsafePointer<UInt8>?, _ length: UInt,
    _ sealed: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ sealedLength: UnsafeMutablePointer<UInt>?
) -> Int32 {
    boundary {
        let vault = try Handles.lookup(vaultHandle, VaultHandle.self, "vault").vault
        let vm = try Arguments.uuid(vm)
        let context = try Arguments.optionalString(context, "context") ?? ""
        let bytes = try Arguments.bytes(data, length, "data", limit: VMSealedBlob.maximumPlaintext)
        let out = try Arguments.output(sealed, "sealed")
        let outLength = try Arguments.output(sealedLength, "sealed_len")
        let (buffer, count) = try CBuffer.copy(VMSealedBlob.seal(bytes, vault: vault, vm: vm, context: context))
        out.pointee = buffer
        outLength.pointee = UInt(count)
    }
}

@_cdecl("gv_blob_open")
public func gv_blob_open(
    _ vaultHandle: OpaquePointer?, _ vm: UnsafePointer<CChar>?, _ context: UnsafePointer<CChar>?,
    _ sealed: UnsafePointer<UInt8>?, _ sealedLength: UInt,
    _ data: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ length: UnsafeMutablePointer<UInt>?
) -> Int32 {
    boundary {
        let vault = try Handles.lookup(vaultHandle, VaultHandle.self, "vault").vault
        let vm = try Arguments.uuid(vm)
        let context = try Arguments.optionalString(context, "context") ?? ""
        let bytes = try Arguments.bytes(sealed, sealedLength, "sealed", limit: VMSealedBlob.maximumPlaintext + VMSealedBlob.overhead)
        let out = try Arguments.output(data, "data")
        let outLength = try Arguments.output(length, "len")
        let (buffer, count) = try CBuffer.copy(VMSealedBlob.open(bytes, vault: vault, vm: vm, context: context))
        out.pointee = buffer
        outLength.pointee = UInt(count)
    }
}
