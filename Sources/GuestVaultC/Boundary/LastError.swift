import Glibc
import GuestVaultCore

/// The per-thread message of the last failure (`gv_last_error_message`): a malloc'ed
/// C string under a pthread key, freed when replaced or when the thread ends.
enum LastError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key) { free($0) }
        precondition(result == 0, "pthread_key_create failed: \(result)")
        return key
    }()

    static func set(_ message: String) {
        let old = pthread_getspecific(key)
        // Messages are one line and never hold key material (errors never do).
        let copy = strdup(message.isEmpty ? "unknown failure" : message)
        pthread_setspecific(key, copy)
        free(old)
    }

    static var current: UnsafePointer<CChar>? {
        pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
    }
}

/// Runs the body of an exported function: every Swift error is caught here, turned
/// into a status code, and its message kept for `gv_last_error_message`. Nothing
/// throws across the boundary.
@inline(__always)
func boundary(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return Status.ok
    } catch {
        LastError.set(ErrorChain.message(of: error))
        return Status.code(Status.category(of: error))
    }
}
