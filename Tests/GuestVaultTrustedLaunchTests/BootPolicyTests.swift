import Foundation
import GuestVaultCore
import GuestVaultTPMContainer
import Testing

/// The golden PCR policy as hostile input: selections, entry parsing, mismatches.
struct BootPolicyTests {
    static let zero = [UInt8](repeating: 0, count: 32)
    static let one = [UInt8](repeating: 1, count: 32)

    @Test(arguments: [("0-7", Set(0...7)), ("0,2,7", Set([0, 2, 7])), ("4-4,9", Set([4, 9])), ("all", Set(0..<24))])
    func selections(_ text: String, _ expected: Set<Int>) throws {
        #expect(try BootPolicy.selection(text) == expected)
    }

    @Test(arguments: ["", "7-0", "24", "0-24", "-1", "1,,2", "a", "1-2-3", "99999999999999999999"])
    func badSelectionsAreRefused(_ text: String) {
        #expect(throws: BootPolicyError.self) { try BootPolicy.selection(text) }
    }

    @Test func aRecordedPolicyRoundTripsAndNamesTheChangedPCR() throws {
        let recorded = Dictionary(uniqueKeysWithValues: (0...7).map { ($0, Self.zero) })
        let policy = try BootPolicy.decode(BootPolicy(values: recorded).encoded())
        #expect(try policy.values() == recorded)
        #expect(try policy.mismatches(current: recorded).isEmpty)
        var changed = recorded
        changed[7] = Self.one
        changed.removeValue(forKey: 3)
        let mismatched = try policy.mismatches(current: changed)
        #expect(mismatched.map(\.pcr) == [3, 7])
        #expect(mismatched.last?.current == String(repeating: "01", count: 32))
        #expect(mismatched.first?.current == "")
    }

    @Test(arguments: [
        #"{"format":"guestvault-boot-policy/2","bank":"sha256","recorded":0,"pcrs":{"7":"00"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha1","recorded":0,"pcrs":{"7":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha256","recorded":0,"pcrs":{"24":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha256","recorded":0,"pcrs":{"-1":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha256","recorded":0,"pcrs":{"7":"zz00000000000000000000000000000000000000000000000000000000000000"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha256","recorded":0,"pcrs":{"7":"00"}}"#,
        #"{"format":"guestvault-boot-policy/1","bank":"sha256","recorded":0,"pcrs":{}}"#,
        #"{"format":"guestvault-boot-policy/1"}"#,
        "not json",
    ])
    func malformedEntriesAreRefused(_ text: String) {
        #expect(throws: BootPolicyError.self) { try BootPolicy.decode(Array(text.utf8)) }
    }

    @Test func anOversizedEntryIsRefusedBeforeParsing() {
        let bytes = [UInt8](repeating: UInt8(ascii: " "), count: BootPolicy.maximumEntrySize + 1)
        #expect { try BootPolicy.decode(bytes) } throws: { ($0 as? BootPolicyError)?.message.contains("at most") == true }
    }

    @Test func aMismatchHasItsOwnExitCode() {
        #expect(ErrorCode.bootPolicyMismatch.category == .policyMismatch)
        #expect(ErrorCategory.policyMismatch.exitCode == 15)
    }
}
