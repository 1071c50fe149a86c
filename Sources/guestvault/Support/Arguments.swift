import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultState
import GuestVaultSystem

// Command-line values as types: ArgumentParser checks them while parsing and names the
// flag in its one-line message, so no verb validates them by hand. Shared by every verb
// (the serve and transfer verbs may adopt them too).

/// A VM's UUID (`--vm`).
struct VMIdentifier: ExpressibleByArgument, Sendable {
    let uuid: UUID

    init?(argument: String) {
        guard let uuid = UUID(uuidString: argument) else { return nil }
        self.uuid = uuid
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// A container entry name: 1 to 255 bytes of UTF-8, no control characters, no
/// leading or trailing whitespace (``EntryName/isValid(_:)``).
struct EntryNameArgument: ExpressibleByArgument, Sendable {
    let name: String

    init?(argument: String) {
        guard EntryName.isValid(argument) else { return nil }
        name = argument
    }
}

/// An X25519 public key as 64 hex digits (`--recovery-recipient`).
struct RecipientKeyArgument: ExpressibleByArgument, Sendable {
    let key: X25519.PublicKey

    init?(argument: String) {
        guard let bytes = bytes(fromHex: argument), bytes.count == 32,
              let key = try? X25519.PublicKey(rawRepresentation: bytes) else { return nil }
        self.key = key
    }
}

/// A whole number in a closed range, for sizes, counts and costs; the range is part
/// of the type, so the message names it.
protocol BoundedInteger: ExpressibleByArgument {
    static var range: ClosedRange<Int> { get }
    var value: Int { get }
    init(checked value: Int)
}

extension BoundedInteger {
    init?(argument: String) {
        guard let value = Int(argument), Self.range.contains(value) else { return nil }
        self.init(checked: value)
    }

    var defaultValueDescription: String { String(value) }
}

/// scrypt cost of a passphrase vault as log2 N (10...20).
struct ScryptLog2N: BoundedInteger {
    static let range = 10...20
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// A size in MiB for the demo's runtime state (1...4096).
struct DemoSizeMiB: BoundedInteger {
    static let range = 1...4096
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// The benchmark's stream size in MiB (16...1048576).
struct StreamMiB: BoundedInteger {
    static let range = 16...1_048_576
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// The benchmark's transfer size in MiB (1...1048576).
struct TransferMiB: BoundedInteger {
    static let range = 1...1_048_576
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// How many commits to time (10...1000000).
struct CommitCount: BoundedInteger {
    static let range = 10...1_000_000
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// How many rounds to run (1...1000).
struct RoundCount: BoundedInteger {
    static let range = 1...1000
    let value: Int
    init(checked value: Int) { self.value = value }
}

/// A duration in seconds, above zero and at most an hour.
struct PositiveSeconds: ExpressibleByArgument, Sendable {
    let seconds: Double

    init(seconds: Double) { self.seconds = seconds }

    init?(argument: String) {
        guard let value = Double(argument), value > 0, value <= 3600 else { return nil }
        seconds = value
    }

    var defaultValueDescription: String { String(seconds) }
}

/// An input file, or `-` for standard input. Opened later with the safe-open checks
/// (a FIFO, device or directory is refused with a message naming it).
struct InputPath: ExpressibleByArgument, Sendable {
    /// nil for standard input.
    let path: String?

    init(argument: String) {
        path = argument == "-" ? nil : argument
    }

    static var defaultCompletionKind: CompletionKind { .file() }
}

/// An output file, or `-` for standard output.
struct OutputPath: ExpressibleByArgument, Sendable {
    /// nil for standard output.
    let path: String?

    init(argument: String) {
        path = argument == "-" ? nil : argument
    }

    static var defaultCompletionKind: CompletionKind { .file() }
}
