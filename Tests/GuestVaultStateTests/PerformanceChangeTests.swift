import Foundation
@testable import GuestVaultState
import Testing

/// The performance round's changes keep what they replaced: the lock file's holder text
/// and the stream batch bounds (docs/PERFORMANCE.md).
@Suite struct PerformanceChangeTests {
    /// The lock holder's time is the same text ISO8601DateFormatter wrote
    /// (YYYY-MM-DDTHH:MM:SSZ, UTC), now without loading ICU.
    @Test func lockTimestampIsISO8601UTC() throws {
        let stamp = ContainerLock.utcTimestamp()
        #expect(stamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z/) != nil, "\(stamp)")
        let parsed = try #require(ISO8601DateFormatter().date(from: stamp))
        #expect(abs(parsed.timeIntervalSinceNow) < 3600)
        #expect(stamp == ISO8601DateFormatter().string(from: parsed))
    }

    /// Sixteen chunks per thread, never more than 64 unless there are more than 32
    /// threads: memory stays fixed whatever the stream's size.
    @Test(arguments: [(1, 16), (2, 32), (4, 64), (8, 64), (64, 128), (0, 16)])
    func streamBatch(threads: Int, chunks: Int) {
        #expect(SealedStream.batch(threads: threads) == chunks)
    }
}
