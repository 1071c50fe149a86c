public import Foundation

/// The built `guestvault` binary: it sits beside the test bundle in the build folder
/// (Swift Testing on Linux runs inside `<build>/debug/<Package>PackageTests.xctest`).
public enum GuestVaultBinary {
    public static var url: URL {
        var directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("guestvault")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: "guestvault")
    }

    public static var path: String { url.path }

    /// `guestvault-vm`, the per-VM process on its own (serve and the swtpm front ends),
    /// built beside `guestvault`.
    public static var vmPath: String { url.deletingLastPathComponent().appendingPathComponent("guestvault-vm").path }
}
