#if canImport(Glibc)
import Glibc
#endif

/// A detached POSIX thread running one closure: what Foundation's `Thread` gave the
/// services beside the TPM server, without Foundation (the per-VM executable links only
/// FoundationEssentials, docs/PERFORMANCE.md).
public enum BackgroundThread {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new detached thread; `name` names it in errors.
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let body = Unmanaged<Body>.fromOpaque(raw).takeRetainedValue()
            body.run()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw SystemError("pthread_create", path: name, errno: result)
        }
        pthread_detach(thread)
    }
}
