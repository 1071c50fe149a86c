import Foundation
import GuestVaultCrypto
import Testing

/// Issue 13.8: key bytes live in memory that core dumps leave out (and that is locked
/// against swap where the limit allows), for small and large secrets alike.
@Suite struct SecureMemoryTests {
    /// The VmFlags of the mapping of this process that holds `address` (/proc/self/smaps).
    func flags(of address: UInt) throws -> [String] {
        // /proc files report size 0: read to the end rather than by size.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":"),
               let dash = range.firstIndex(of: "-"),
               let start = UInt(range[..<dash], radix: 16), let end = UInt(range[range.index(after: dash)...], radix: 16) {
                inside = (start..<end).contains(address)
            } else if inside, fields.first == "VmFlags:" {
                return fields.dropFirst().map(String.init)
            }
        }
        return []
    }

    @Test(arguments: [1, 32, 64, 65, 1000, 4096, 5000, 70_000])
    func secretBytesAreNotDumpedAndLocked(count: Int) throws {
        let secret = try SecretBytes(randomCount: count)
        let address = secret.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        let vmFlags = try flags(of: address)
        #expect(vmFlags.contains("dd"), "MADV_DONTDUMP on the secret's mapping: \(vmFlags)")
        if getuid() == 0 {
            #expect(vmFlags.contains("lo"), "mlock'ed (root has no memlock limit): \(vmFlags)")
        }
        // Still the same secret after many others came and went.
        let copy = SecretBytes(copying: secret.unsafeCopyOfBytes())
        for _ in 0..<2000 { _ = try SecretBytes(randomCount: count) }
        #expect(copy == secret)
    }

    @Test func derivedKeysLiveThereToo() throws {
        let key = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(randomCount: 32), salt: [], info: [], outputByteCount: 32)
        let address = key.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(try flags(of: address).contains("dd"))
    }
}
