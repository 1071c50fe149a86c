import GuestVaultKeys
import GuestVaultState
import Synchronization

/// A vault handle: the vault is Sendable and may be shared by threads.
final class VaultHandle: Sendable {
    let vault: KeyVault
    init(_ vault: KeyVault) { self.vault = vault }
}

/// A container handle: the container is used under a lock, one call at a time.
final class ContainerHandle: Sendable {
    private let state: Mutex<GuestStateContainer>
    let vault: KeyVault?

    init(_ container: sending GuestStateContainer, vault: KeyVault?) {
        state = Mutex(container)
        self.vault = vault
    }

    func with<R: Sendable>(_ body: (GuestStateContainer) throws -> R) throws -> R {
        try state.withLock { container throws -> R in try body(container) }
    }
}

/// A stream entry opened for random access to its chunks.
final class StreamHandle: Sendable {
    let container: ContainerHandle
    let name: String
    let size: UInt64
    let chunkCount: UInt64

    init(container: ContainerHandle, name: String, size: UInt64, chunkCount: UInt64) {
        self.container = container
        self.name = name
        self.size = size
        self.chunkCount = chunkCount
    }
}

/// The live handles. C gets an opaque number, never a pointer to an object: a handle
/// is looked up here on every call, so a closed, foreign or mistyped handle is refused
/// with a usage error instead of being dereferenced. Numbers are never reused.
enum Handles {
    private struct Table: ~Copyable {
        var next: UInt = 1
        var objects: [UInt: any AnyObject & Sendable] = [:]
    }

    private static let table = Mutex(Table())
    /// Handles are multiples of 16 from here, so they look like (aligned) pointers to C
    /// and a NULL or a small integer is never one.
    private static let base: UInt = 0x4756_0000

    static func register(_ object: some AnyObject & Sendable) -> OpaquePointer {
        let number = table.withLock { table -> UInt in
            let number = base &+ table.next &* 16
            table.next &+= 1
            table.objects[number] = object
            return number
        }
        return OpaquePointer(bitPattern: number)!
    }

    static func lookup<T: AnyObject & Sendable>(_ handle: OpaquePointer?, _ type: T.Type, _ what: String) throws -> T {
        guard let handle else { throw CAPIError.usage("the \(what) handle is NULL") }
        let key = UInt(bitPattern: handle)
        let object = table.withLock { $0.objects[key] }
        guard let typed = object as? T else {
            throw CAPIError.usage("\(handle) is not an open \(what) handle (closed already, or not one)")
        }
        return typed
    }

    /// Removes a handle; returns its object for the caller to release.
    static func remove<T: AnyObject & Sendable>(_ handle: OpaquePointer, _ type: T.Type, _ what: String) throws -> T {
        let key = UInt(bitPattern: handle)
        let object = table.withLock { table -> (any AnyObject & Sendable)? in
            guard table.objects[key] is T else { return nil }
            return table.objects.removeValue(forKey: key)
        }
        guard let typed = object as? T else {
            throw CAPIError.usage("\(handle) is not an open \(what) handle (closed already, or not one)")
        }
        return typed
    }
}
