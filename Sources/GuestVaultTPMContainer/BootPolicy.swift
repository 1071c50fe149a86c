public import FoundationEssentials
public import GuestVaultCore
import GuestVaultCrypto

extension ErrorCode {
    /// The PCRs of a boot differ from the recorded golden policy (exit code 15).
    public static let bootPolicyMismatch = ErrorCode("bootPolicyMismatch", .policyMismatch)
    /// The container holds no recorded boot policy.
    public static let bootPolicyMissing = ErrorCode("bootPolicyMissing", .notFound)
    /// A policy entry or PCR selection that is not what GuestVault writes.
    public static let bootPolicyMalformed = ErrorCode("bootPolicyMalformed", .integrity)
}

/// An error of the boot-integrity policy.
public enum BootPolicyErrorDomain {}
public typealias BootPolicyError = DomainError<BootPolicyErrorDomain>

/// The golden PCR values of a known-good boot, sealed in the container as the entry
/// `policy.pcrs` (docs/TRUSTED-LAUNCH.md): JSON, SHA-256 bank only.
///
/// ```json
/// {"format":"guestvault-boot-policy/1","bank":"sha256","recorded":1764460800,
///  "pcrs":{"0":"<64 hex digits>", …}}
/// ```
public struct BootPolicy: Sendable, Equatable, Codable {
    public static let entryName = "policy.pcrs"
    public static let formatName = "guestvault-boot-policy/1"
    /// The PCRs a policy covers unless told otherwise: the firmware's (PCR 0-7).
    public static let defaultPCRs: Set<Int> = Set(0...7)
    /// An entry larger than this is not a policy.
    public static let maximumEntrySize = 16 << 10

    public let format: String
    public let bank: String
    /// Seconds since the epoch.
    public let recorded: Int64
    /// PCR index (decimal text) to its SHA-256 value (lower-case hex).
    public let pcrs: [String: String]

    public init(values: [Int: [UInt8]], recorded: Date = Date()) {
        format = Self.formatName
        bank = "sha256"
        self.recorded = Int64(recorded.timeIntervalSince1970)
        pcrs = Dictionary(uniqueKeysWithValues: values.map { (String($0.key), hexString($0.value)) })
    }

    /// The selected PCRs and their recorded values.
    public func values() throws -> [Int: [UInt8]] {
        var out: [Int: [UInt8]] = [:]
        for (key, text) in pcrs {
            guard key.count <= 2, key.allSatisfy({ $0.isASCII && $0.isNumber }), let index = Int(key), (0..<24).contains(index),
                  text.count == 64, let digest = bytes(fromHex: text), digest.count == 32 else {
                throw BootPolicyError(.bootPolicyMalformed, "the boot policy names PCR \"\(key.prefix(8))\" with value \"\(text.prefix(80))\"; expected an index 0-23 and 64 hex digits")
            }
            out[index] = digest
        }
        return out
    }

    /// The sealed entry's bytes.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    /// Parses an entry as hostile input: size cap, format and bank names, every index and
    /// value checked.
    public static func decode(_ bytes: [UInt8]) throws -> BootPolicy {
        guard bytes.count <= maximumEntrySize else {
            throw BootPolicyError(.bootPolicyMalformed, "the boot policy entry is \(bytes.count) bytes; at most \(maximumEntrySize)")
        }
        let policy: BootPolicy
        do {
            policy = try JSONDecoder().decode(BootPolicy.self, from: Data(bytes))
        } catch {
            throw BootPolicyError(.bootPolicyMalformed, "the boot policy entry is not GuestVault's policy JSON", underlying: error)
        }
        guard policy.format == formatName, policy.bank == "sha256" else {
            throw BootPolicyError(.bootPolicyMalformed, "the boot policy has format \"\(policy.format.prefix(40))\" and bank \"\(policy.bank.prefix(16))\"; expected \(formatName) and sha256")
        }
        guard !policy.pcrs.isEmpty else { throw BootPolicyError(.bootPolicyMalformed, "the boot policy selects no PCR") }
        _ = try policy.values()
        return policy
    }

    /// One PCR whose value differs from the recorded one.
    public struct Mismatch: Sendable, Equatable, Codable {
        public let pcr: Int
        public let recorded: String
        public let current: String
    }

    /// The PCRs of `current` that differ from the policy (a PCR missing from `current`
    /// counts as differing, with an empty value).
    public func mismatches(current: [Int: [UInt8]]) throws -> [Mismatch] {
        try values().sorted { $0.key < $1.key }.compactMap { index, recorded in
            let now = current[index]
            return now == recorded ? nil : Mismatch(pcr: index, recorded: hexString(recorded), current: now.map { hexString($0) } ?? "")
        }
    }

    /// Parses a PCR selection: "0-7", "0,2,4-7", or "all".
    public static func selection(_ text: String) throws -> Set<Int> {
        if text == "all" { return Set(0..<24) }
        var out: Set<Int> = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingWhitespace()) }
            guard (1...2).contains(bounds.count), let low = bounds.first!, let high = bounds.last!, 0 <= low, low <= high, high < 24 else {
                throw BootPolicyError(.bootPolicyMalformed, "PCR selection \"\(text.prefix(80))\" is not like 0-7, 0,2,7 or all (indices 0-23)")
            }
            out.formUnion(low...high)
        }
        return out
    }
}
