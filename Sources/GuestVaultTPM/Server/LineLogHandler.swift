import FoundationEssentials
public import GuestVaultSystem
public import Logging
import Synchronization

/// A swift-log handler that writes one line per record: time (UTC), program, level,
/// message, then the metadata as `key=value` pairs in key order. Records never span
/// lines (newlines in messages and values become spaces), and each line is one write,
/// so lines from one process never interleave in an O_APPEND file.
///
/// `guestvault serve` uses it for standard error and for `--log-file` (opened with
/// ``SafeOpen/appendLog(_:mode:)``: no symlinks, 0600, regular files of this user only).
public struct LineLogHandler: LogHandler {
    /// Where lines go.
    public enum Sink: Sendable {
        case standardError
        case file(OpenFile)
    }

    /// Shared by the copies of a handler (swift-log copies it for each metadata change).
    final class Output: Sendable {
        let sink: Sink
        let lock = Mutex(())
        init(_ sink: Sink) { self.sink = sink }

        func write(_ line: String) {
            lock.withLock { _ in
                switch sink {
                case .standardError:
                    Descriptors.write(line, to: 2)
                case .file(let file):
                    // A log that cannot be written must not stop the TPM.
                    try? file.append(Array(line.utf8))
                }
            }
        }
    }

    private let output: Output
    private let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, sink: Sink, level: Logger.Level) {
        self.label = label
        self.output = Output(sink)
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "\(Self.timestamp()) \(label): \(event.level.rawValue): \(Self.oneLine(event.message.description))"
        for key in merged.keys.sorted() {
            line += " \(key)=\(Self.oneLine(merged[key].map { "\($0)" } ?? ""))"
        }
        output.write(line + "\n")
    }

    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }

    static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
