import Foundation

/// The content the crash-test child commits at each generation (same formula as the
/// crash tool's, Tests/GuestVaultCrashTool/main.swift).
func crashPattern(generation: UInt64, size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: UInt64($0) &* 2654435761 &+ generation &* 40503) }
}
