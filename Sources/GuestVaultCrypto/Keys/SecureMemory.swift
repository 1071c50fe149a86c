import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where ``SecretBytes`` keep their bytes: memory that is kept out of core dumps
/// (MADV_DONTDUMP) and, as far as the memory-lock limit allows, out of swap (mlock).
///
/// Small secrets (keys, shared secrets, PINs: up to 4 KiB) come from slabs: 64 KiB
/// anonymous mappings cut into fixed-size slots of 64, 256, 1024 or 4096 bytes, locked
/// and marked once when mapped, so a derivation costs a lock and a pointer pop rather
/// than a system call. A larger secret gets a mapping of its own. Slots are reused, never
/// unmapped; ``SecretBytes`` cleanses a slot before it goes back.
enum SecureMemory {
    /// One piece of secure memory.
    struct Block: @unchecked Sendable {
        let buffer: UnsafeMutableRawBufferPointer
        /// The slot size class, or nil for a mapping of its own.
        let sizeClass: Int?
    }

    static let slotSizes = [64, 256, 1024, 4096]
    static let slabByteCount = 64 * 1024

    private struct FreeLists: ~Copyable {
        /// Free slot addresses per size class (as integers: the lock holds no pointers).
        var slots: [[UInt]] = Array(repeating: [], count: SecureMemory.slotSizes.count)
        var mappedBytes = 0
        var lockedBytes = 0
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    private static let state = Mutex(FreeLists())

    /// Bytes of secure memory mapped so far, and how many of them are locked (mlock can
    /// fail under RLIMIT_MEMLOCK for an unprivileged user; the memory is still excluded
    /// from core dumps).
    static var usage: (mapped: Int, locked: Int) {
        state.withLock { ($0.mappedBytes, $0.lockedBytes) }
    }

    /// Secure memory for `count` bytes (at least one), zero-filled.
    static func allocate(_ count: Int) -> Block {
        let wanted = max(count, 1)
        guard let sizeClass = slotSizes.firstIndex(where: { $0 >= wanted }) else {
            let size = (wanted + pageSize - 1) / pageSize * pageSize
            let (base, locked) = map(size)
            state.withLock {
                $0.mappedBytes += size
                if locked { $0.lockedBytes += size }
            }
            return Block(buffer: UnsafeMutableRawBufferPointer(start: base, count: size), sizeClass: nil)
        }
        let slotSize = slotSizes[sizeClass]
        let address: UInt = state.withLock { lists in
            if let slot = lists.slots[sizeClass].popLast() { return slot }
            let (mapped, locked) = map(slabByteCount)
            let base = UInt(bitPattern: mapped)
            lists.mappedBytes += slabByteCount
            if locked { lists.lockedBytes += slabByteCount }
            let slotCount = slabByteCount / slotSize
            lists.slots[sizeClass].reserveCapacity(lists.slots[sizeClass].count + slotCount)
            for index in stride(from: slotCount - 1, through: 1, by: -1) {
                lists.slots[sizeClass].append(base + UInt(index * slotSize))
            }
            return base
        }
        let buffer = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: slotSize)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        return Block(buffer: buffer, sizeClass: sizeClass)
    }

    /// Gives a block back (the caller has cleansed it).
    static func release(_ block: Block) {
        guard let sizeClass = block.sizeClass, let base = block.buffer.baseAddress else {
            let size = block.buffer.count
            let wasLocked = munlock(block.buffer.baseAddress, size) == 0
            munmap(block.buffer.baseAddress, size)
            state.withLock {
                $0.mappedBytes -= size
                if wasLocked { $0.lockedBytes -= size }
            }
            return
        }
        let address = UInt(bitPattern: base)
        state.withLock { $0.slots[sizeClass].append(address) }
    }

    /// Maps `size` bytes (a multiple of the page size) of private anonymous memory,
    /// marked MADV_DONTDUMP and locked if the limit allows. Returns whether it is locked.
    private static func map(_ size: Int) -> (UnsafeMutableRawPointer, Bool) {
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              base != MAP_FAILED else {
            // Out of address space: there is no safe fallback for key material.
            fatalError("could not map \(size) bytes of memory for secrets (errno \(errno))")
        }
        _ = madvise(base, size, MADV_DONTDUMP)
        let locked = mlock(base, size) == 0
        return (base, locked)
    }
}
