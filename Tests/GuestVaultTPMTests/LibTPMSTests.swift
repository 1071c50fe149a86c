import GuestVaultTPM
import Testing

@Suite struct LibTPMSTests {
    @Test func linksLibtpms() {
        let parts = LibTPMS.version.split(separator: ".")
        #expect(parts.count == 3)
        #expect(parts.first.flatMap { Int($0) } == 0)
    }
}
