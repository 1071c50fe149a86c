import Foundation
import GuestVaultCore

/// Checks of what C passes in: NULLs, lengths, UTF-8, flags. Each failure is a usage
/// error that names the argument; nothing here can trap.
enum Arguments {
    static func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws -> String {
        guard let pointer else { throw CAPIError.usage("\(name) is NULL") }
        guard let string = String(validatingCString: pointer) else { throw CAPIError.usage("\(name) is not valid UTF-8") }
        return string
    }

    static func optionalString(_ pointer: UnsafePointer<CChar>?, _ name: String) throws -> String? {
        guard pointer != nil else { return nil }
        return try string(pointer, name)
    }

    static func uuid(_ pointer: UnsafePointer<CChar>?, _ name: String = "vm_uuid") throws -> UUID {
        let text = try string(pointer, name)
        guard let uuid = UUID(uuidString: text) else {
            throw CAPIError.usage("\(name) \"\(text.prefix(64))\" is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        }
        return uuid
    }

    static func length(_ value: UInt, _ name: String, limit: Int) throws -> Int {
        guard let count = Int(exactly: value), count <= limit else {
            throw CAPIError(.capiLimit, "\(name) is \(value) bytes; the limit is \(limit)")
        }
        return count
    }

    /// Bytes from a pointer and a length (NULL only with length 0).
    static func bytes(_ pointer: UnsafePointer<UInt8>?, _ count: UInt, _ name: String, limit: Int) throws -> [UInt8] {
        let count = try length(count, "\(name)_len", limit: limit)
        if count == 0 { return [] }
        guard let pointer else { throw CAPIError.usage("\(name) is NULL but \(name)_len is \(count)") }
        return Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    static func output<T>(_ pointer: UnsafeMutablePointer<T>?, _ name: String) throws -> UnsafeMutablePointer<T> {
        guard let pointer else { throw CAPIError.usage("\(name) is NULL") }
        return pointer
    }

    static func flags(_ flags: UInt32, allowed: UInt32, _ name: String = "flags") throws {
        guard flags & ~allowed == 0 else {
            throw CAPIError(.capiUsage, "\(name) 0x\(String(flags, radix: 16)) has unknown bits 0x\(String(flags & ~allowed, radix: 16))")
        }
    }
}
