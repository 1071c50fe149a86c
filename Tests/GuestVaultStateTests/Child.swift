import Foundation

/// The content the crash-test child commits at each generation (same formula as the
/// CLI's hidden `debug-commit-loop`).
func crashPattern(generation: UInt64, size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: UInt64($0) &* 2654435761 &+ generation &* 40503) }
}
