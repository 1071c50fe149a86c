import FoundationEssentials
import Glibc
import GuestVaultSystem
public import Logging

/// The CLI's logging: swift-log with a handler that writes one line per record to
/// standard error (`<time> <level> <label>: <message> key=value ...`), printable
/// characters only. The level comes from `--log-level` or `GUESTVAULT_LOG_LEVEL`
/// (trace, debug, info, notice, warning, error, critical; default warning). Libraries
/// take a `Logger` from their caller; only the executable chooses the handler.
public enum CLILogging {
    public static let environmentVariable = "GUESTVAULT_LOG_LEVEL"

    /// The level from `--log-level`, else the environment, else `.warning`.
    public static func level(option: String?) throws -> Logger.Level {
        let text = option ?? Environment.value(environmentVariable)
        guard let text, !text.isEmpty else { return .warning }
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw CLIError(.badArguments,
                           "log level \"\(text)\" is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return level
    }

    /// Installs the stderr handler (once per process; swift-log allows one bootstrap).
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in StandardErrorLineHandler(label: label, logLevel: level) }
    }
}

/// One line per record on standard error.
struct StandardErrorLineHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let fields = merged.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        let time = Date().formatted(.iso8601)
        let line = Failure.sanitized("\(time) \(event.level.rawValue) \(label): \(event.message)\(fields)")
        Descriptors.write(line + "\n", to: 2)
    }
}
