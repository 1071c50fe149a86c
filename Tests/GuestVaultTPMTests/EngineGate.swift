import Synchronization

/// libtpms holds one TPM per process, and tests run in parallel: every test that starts
/// an engine in this process does so inside `EngineGate.run`.
enum EngineGate {
    private static let gate = Mutex(())

    static func run<T>(_ body: () throws -> T) rethrows -> T {
        try gate.withLock { _ in try body() }
    }
}
