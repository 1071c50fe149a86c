import Foundation
import Glibc
import GuestVaultCore
import GuestVaultKeys
import GuestVaultState

/// Open flags (GV_OPEN_*).
enum OpenFlag {
    static let write: UInt32 = 1 << 0
    static let allowRollback: UInt32 = 1 << 1
    static let noUnlock: UInt32 = 1 << 2
    static let all = write | allowRollback | noUnlock
}

/// The C caller's read callback or write callback with its context pointer. The
/// pointers are the caller's; they are used only during the call that was given them.
struct ReadCallback: @unchecked Sendable {
    let function: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UInt) -> Int64
    let context: UnsafeMutableRawPointer?

    /// Fills `buffer` from its start; returns how many bytes (0 at the end).
    func read(into buffer: inout [UInt8]) throws -> Int {
        let capacity = buffer.count
        let n = buffer.withUnsafeMutableBufferPointer { function(context, $0.baseAddress, UInt($0.count)) }
        guard n >= 0 else { throw CAPIError(.capiCallback, "the read callback failed (returned \(n))") }
        guard n <= Int64(capacity) else {
            throw CAPIError(.capiCallback, "the read callback returned \(n) bytes, more than the \(capacity) asked for")
        }
        return Int(n)
    }
}

struct WriteCallback: @unchecked Sendable {
    let function: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, UInt) -> Int32
    let context: UnsafeMutableRawPointer?

    func write(_ bytes: [UInt8]) throws {
        let result = bytes.withUnsafeBufferPointer { function(context, $0.baseAddress, UInt($0.count)) }
        guard result == 0 else { throw CAPIError(.capiCallback, "the write callback failed (returned \(result))") }
    }
}

/// Reads and writes of a caller's file descriptor, retrying on EINTR.
enum Descriptor {
    static func read(_ fd: Int32, into buffer: inout [UInt8]) throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw CAPIError(.capiCallback, "reading file descriptor \(fd) failed: \(String(cString: strerror(errno)))")
        }
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            throw CAPIError(.capiCallback, "writing file descriptor \(fd) failed: \(n < 0 ? String(cString: strerror(errno)) : "wrote nothing")")
        }
    }
}

private func container(_ handle: OpaquePointer?) throws -> ContainerHandle {
    try Handles.lookup(handle, ContainerHandle.self, "container")
}

private func entryName(_ pointer: UnsafePointer<CChar>?) throws -> String {
    try Arguments.string(pointer, "name")
}

// MARK: Opening and closing

@_cdecl("gv_container_create")
public func gv_container_create(
    _ vaultHandle: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ vm: UnsafePointer<CChar>?,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        let vault = try Handles.lookup(vaultHandle, VaultHandle.self, "vault").vault
        let path = try Arguments.string(path, "path")
        let vm = try Arguments.uuid(vm)
        let out = try Arguments.output(out, "out")
        let created = try GuestStateContainer.create(at: path, vm: vm, vault: vault)
        out.pointee = Handles.register(ContainerHandle(created, vault: vault))
    }
}

@_cdecl("gv_container_open")
public func gv_container_open(
    _ vaultHandle: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ flags: UInt32, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        try Arguments.flags(flags, allowed: OpenFlag.all)
        let unlock = flags & OpenFlag.noUnlock == 0
        let vault = vaultHandle == nil && !unlock ? nil : try Handles.lookup(vaultHandle, VaultHandle.self, "vault").vault
        let path = try Arguments.string(path, "path")
        let out = try Arguments.output(out, "out")
        let opened = try GuestStateContainer.open(at: path, access: flags & OpenFlag.write != 0 ? .readWrite : .readOnly)
        if unlock, let vault {
            try opened.unlock(with: UnlockCredentials(vault: vault), allowRollback: flags & OpenFlag.allowRollback != 0)
        }
        out.pointee = Handles.register(ContainerHandle(opened, vault: vault))
    }
}

@_cdecl("gv_container_close")
public func gv_container_close(_ handle: OpaquePointer?) -> Int32 {
    guard let handle else { return Status.ok }
    return boundary {
        let closing = try Handles.remove(handle, ContainerHandle.self, "container")
        try closing.with { container in
            container.discardPendingChanges()
            try container.flush()
        }
    }
}

// MARK: Inspecting

@_cdecl("gv_container_generation")
public func gv_container_generation(_ handle: OpaquePointer?, _ generation: UnsafeMutablePointer<UInt64>?) -> Int32 {
    boundary {
        let out = try Arguments.output(generation, "generation")
        out.pointee = try container(handle).with { $0.generation }
    }
}

@_cdecl("gv_container_slot_count")
public func gv_container_slot_count(_ handle: OpaquePointer?, _ count: UnsafeMutablePointer<UInt>?) -> Int32 {
    boundary {
        let out = try Arguments.output(count, "count")
        out.pointee = UInt(try container(handle).with { $0.slots.slots.count })
    }
}

@_cdecl("gv_container_vm_uuid")
public func gv_container_vm_uuid(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<CChar>?) -> Int32 {
    boundary {
        let out = try Arguments.output(out, "out")
        let text = Array(try container(handle).with { $0.vm }.uuidString.lowercased().utf8)
        for (i, byte) in text.prefix(36).enumerated() { out[i] = CChar(bitPattern: byte) }
        out[min(text.count, 36)] = 0
    }
}

/// What `gv_container_info_json` prints.
private struct InfoDocument: Encodable {
    let container: ContainerInfo
    let unlocked: Bool
    let unlockedSlot: Int?
    let vaultGeneration: UInt64?
}

@_cdecl("gv_container_info_json")
public func gv_container_info_json(
    _ handle: OpaquePointer?, _ json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ length: UnsafeMutablePointer<UInt>?
) -> Int32 {
    boundary {
        let out = try Arguments.output(json, "json")
        let handle = try container(handle)
        let document = try handle.with { c in
            InfoDocument(container: c.info, unlocked: c.unlockedSlot != nil, unlockedSlot: c.unlockedSlot,
                         vaultGeneration: try handle.vault?.counters.latest(vm: c.vm))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let (string, count) = try CBuffer.string(String(decoding: try encoder.encode(document), as: UTF8.self))
        out.pointee = string
        length?.pointee = UInt(count)
    }
}

@_cdecl("gv_container_entry_count")
public func gv_container_entry_count(_ handle: OpaquePointer?, _ count: UnsafeMutablePointer<UInt>?) -> Int32 {
    boundary {
        let out = try Arguments.output(count, "count")
        out.pointee = UInt(try container(handle).with { $0.entryNames.count })
    }
}

@_cdecl("gv_container_entry_name")
public func gv_container_entry_name(
    _ handle: OpaquePointer?, _ index: UInt, _ name: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    boundary {
        let out = try Arguments.output(name, "name")
        let names = try container(handle).with { $0.entryNames }
        guard let i = Int(exactly: index), names.indices.contains(i) else {
            throw CAPIError(.capiUsage, "there is no entry \(index) (the container has \(names.count))")
        }
        out.pointee = try CBuffer.string(names[i]).0
    }
}

@_cdecl("gv_container_entry_info")
public func gv_container_entry_info(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ size: UnsafeMutablePointer<UInt64>?,
    _ kind: UnsafeMutablePointer<Int32>?
) -> Int32 {
    boundary {
        let name = try entryName(name)
        let sizeOut = try Arguments.output(size, "size")
        let c = try container(handle)
        let entry = try c.with { container in container.info.entries.first { $0.name == name } }
        guard let entry else {
            let path = try c.with { $0.path }
            throw CAPIError(.init("capi.noSuchEntry", .notFound), "\(path) entry \(name): no such entry")
        }
        sizeOut.pointee = entry.size
        kind?.pointee = entry.kind == "stream" ? 2 : 1
    }
}

// MARK: Reading

@_cdecl("gv_container_get")
public func gv_container_get(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ data: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ length: UnsafeMutablePointer<UInt>?
) -> Int32 {
    boundary {
        let name = try entryName(name)
        let dataOut = try Arguments.output(data, "data")
        let lengthOut = try Arguments.output(length, "len")
        let bytes = try container(handle).with { try $0.read(name) }
        let (buffer, count) = try CBuffer.copy(bytes)
        dataOut.pointee = buffer
        lengthOut.pointee = UInt(count)
    }
}

@_cdecl("gv_container_get_stream")
public func gv_container_get_stream(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?,
    _ write: (@convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, UInt) -> Int32)?,
    _ context: UnsafeMutableRawPointer?
) -> Int32 {
    boundary {
        let name = try entryName(name)
        guard let write else { throw CAPIError.usage("write is NULL") }
        let sink = WriteCallback(function: write, context: context)
        try container(handle).with { try $0.readStream(name) { try sink.write($0) } }
    }
}

@_cdecl("gv_container_get_fd")
public func gv_container_get_fd(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ fd: Int32) -> Int32 {
    boundary {
        let name = try entryName(name)
        guard fd >= 0 else { throw CAPIError.usage("fd \(fd) is not a file descriptor") }
        try container(handle).with { try $0.readStream(name) { try Descriptor.write(fd, $0) } }
    }
}

// MARK: Writing

@_cdecl("gv_container_put")
public func gv_container_put(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ data: UnsafePointer<UInt8>?, _ length: UInt
) -> Int32 {
    boundary {
        let name = try entryName(name)
        let bytes = try Arguments.bytes(data, length, "data", limit: ContainerFormat.maximumBlobSize)
        try container(handle).with { try $0.write(name, bytes) }
    }
}

@_cdecl("gv_container_put_stream")
public func gv_container_put_stream(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?,
    _ read: (@convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UInt) -> Int64)?,
    _ context: UnsafeMutableRawPointer?
) -> Int32 {
    boundary {
        let name = try entryName(name)
        guard let read else { throw CAPIError.usage("read is NULL") }
        let source = ReadCallback(function: read, context: context)
        try container(handle).with { c in
            try c.writeStream(name) { try source.read(into: &$0) }
        }
    }
}

@_cdecl("gv_container_put_fd")
public func gv_container_put_fd(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ fd: Int32) -> Int32 {
    boundary {
        let name = try entryName(name)
        guard fd >= 0 else { throw CAPIError.usage("fd \(fd) is not a file descriptor") }
        try container(handle).with { c in
            try c.writeStream(name) { try Descriptor.read(fd, into: &$0) }
        }
    }
}

@_cdecl("gv_container_delete")
public func gv_container_delete(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> Int32 {
    boundary {
        let name = try entryName(name)
        try container(handle).with { try $0.remove(name) }
    }
}

@_cdecl("gv_container_commit")
public func gv_container_commit(_ handle: OpaquePointer?, _ generation: UnsafeMutablePointer<UInt64>?) -> Int32 {
    boundary {
        let next = try container(handle).with { try $0.commit() }
        generation?.pointee = next
    }
}

@_cdecl("gv_container_discard")
public func gv_container_discard(_ handle: OpaquePointer?) -> Int32 {
    boundary {
        try container(handle).with { $0.discardPendingChanges() }
    }
}

@_cdecl("gv_container_rekey")
public func gv_container_rekey(
    _ handle: OpaquePointer?, _ flags: UInt32, _ epoch: UInt32, _ generation: UnsafeMutablePointer<UInt64>?
) -> Int32 {
    boundary {
        try Arguments.flags(flags, allowed: 1)
        let c = try container(handle)
        guard let vault = c.vault else { throw CAPIError.usage("rekey needs a container opened with its vault") }
        let next = try c.with { container -> UInt64 in
            if flags & 1 != 0 {
                guard epoch == 0 else { throw CAPIError.usage("epoch must be 0 with GV_REKEY_DEK") }
                return try container.rotateDEK()
            }
            let current = container.slots.slots.compactMap { slot -> UInt32? in
                if case .vault(let id, let epoch, _) = slot, id == vault.rootKeyID { return epoch }
                return nil
            }.max() ?? 0
            let target: UInt32
            if epoch != 0 {
                target = epoch
            } else {
                guard current < UInt32.max else { throw CAPIError(.capiLimit, "the KEK epoch is at its maximum") }
                target = current + 1
            }
            guard target != current else { throw CAPIError.usage("the vault slots are already at epoch \(target)") }
            return try container.rotateKEK(to: target)
        }
        generation?.pointee = next
    }
}
