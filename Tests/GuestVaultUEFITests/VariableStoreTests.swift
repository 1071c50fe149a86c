import GuestVaultCore
import GuestVaultUEFI
import Testing

/// The parser against Debian 12's real OVMF templates.
@Suite(.enabled(if: OVMF.available, OVMF.skipReason))
struct VariableStoreTests {
    @Test func microsoftTemplateHasEnrolledKeys() throws {
        let store = try VariableStore.parse(OVMF.microsoft)
        #expect(store.volume.fileSystem == .systemNVDataFV)
        #expect(store.volume.length == 540_672)
        #expect(store.volume.blockMap.map { [$0.count, $0.length] } == [[132, 4096]])
        #expect(store.header.authenticated)
        #expect(store.header.offset == 72 && store.header.size == 0x3FFB8)
        let live = store.liveVariables
        #expect(live.count < store.variables.count, "the template keeps deleted variables")
        for (name, vendor) in [("PK", EFIGUID.globalVariable), ("KEK", .globalVariable), ("db", .imageSecurityDatabase), ("dbx", .imageSecurityDatabase)] {
            let variable = try #require(store.live(name, vendor), "\(name) is live")
            #expect(variable.attributes == [.nonVolatile, .bootServiceAccess, .runtimeAccess, .timeBasedAuthenticatedWriteAccess])
            #expect(variable.timestamp.map { !$0.isZero } == true)
        }
        // Every BootOrder in this template was replaced or removed.
        #expect(store.variables.contains { $0.name == "BootOrder" })
        #expect(!live.contains { $0.name == "BootOrder" })
        #expect(store.variables.filter { $0.name == "BootOrder" }.allSatisfy { $0.status == .deleted })
    }

    @Test func microsoftTemplateSummary() throws {
        let summary = SecureBootSummary(try VariableStore.parse(OVMF.microsoft))
        #expect(summary.setupMode.enabled == false && summary.setupMode.source == "derived")
        #expect(summary.secureBoot.enabled && summary.secureBoot.source == "derived")
        #expect(summary.secureBootEnable == 1)
        #expect(summary.pk.present && summary.pk.certificates.count == 1)
        let kek = summary.kek.certificates.compactMap(\.subject)
        #expect(kek.contains { $0.hasSuffix("CN=Microsoft Corporation KEK CA 2011") })
        #expect(kek.contains { $0 == "C=US, ST=Washington, L=Redmond, O=Microsoft Corporation, CN=Microsoft Corporation KEK CA 2011" })
        let db = summary.db.certificates.compactMap(\.subject)
        #expect(db.contains { $0.hasSuffix("CN=Microsoft Windows Production PCA 2011") })
        #expect(db.contains { $0.hasSuffix("CN=Microsoft Corporation UEFI CA 2011") })
        #expect(summary.dbx.present && summary.dbx.hashCount > 0)
        #expect(summary.dbx.hashCounts["sha256"] == 1)
        #expect(summary.dbx.certificates.isEmpty)
        for database in [summary.pk, summary.kek, summary.db, summary.dbx] {
            #expect(database.error == nil)
            #expect(database.certificates.allSatisfy { $0.error == nil })
        }
    }

    @Test(arguments: ["OVMF_VARS_4M.fd", "OVMF_VARS.fd"])
    func blankTemplateIsInSetupMode(_ name: String) throws {
        let store = try VariableStore.parse(OVMF.bytes(name))
        #expect(store.variables.isEmpty)
        #expect(store.freeBytes == Int(store.header.size) - 28)
        let summary = SecureBootSummary(store)
        #expect(!summary.pk.present && !summary.kek.present && !summary.db.present && !summary.dbx.present)
        #expect(summary.setupMode.enabled)
        #expect(!summary.secureBoot.enabled)
    }

    @Test func smallMicrosoftTemplateMatchesTheLargeOne() throws {
        let small = try VariableStore.parse(OVMF.bytes("OVMF_VARS.ms.fd"))
        let large = try VariableStore.parse(OVMF.microsoft)
        #expect(small.volume.length == 131_072)
        #expect(small.variables.map(\.name) == large.variables.map(\.name))
        #expect(SecureBootSummary(small).db.certificates == SecureBootSummary(large).db.certificates)
    }

    /// A variable in deleted transition is live only while no added copy exists (EDK2).
    @Test func inDeletedTransition() throws {
        var bytes = try OVMF.microsoft
        let pk = try StoreEdit.offset(of: "PK", in: bytes)
        bytes[pk + 2] = 0x3E
        // The first CustomMode (0x64) was deleted; the last one (0x5944) is added.
        #expect(bytes[0x64 + 2] == 0x3C && bytes[0x5944 + 2] == 0x3F)
        bytes[0x64 + 2] = 0x3E
        let store = try VariableStore.parse(bytes)
        #expect(store.live("PK", .globalVariable)?.status == .inDeletedTransition)
        #expect(SecureBootSummary(store).pk.present)
        #expect(store.liveVariables.filter { $0.name == "CustomMode" }.map(\.offset) == [0x5944])
    }

    @Test func guidTextRoundTrips() throws {
        let text = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        let guid = try #require(EFIGUID(text))
        #expect(guid.description == text)
        #expect(guid.bytes == [0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c])
        #expect(EFIGUID("8be4df61-93ca-11d2-aa0d-00e098032b8") == nil)
        #expect(EFIGUID("8be4df61-93ca-11d2-aa0d-00e098032bxx") == nil)
        #expect(EFIGUID("8be4df61-93ca-11d2-aa0d-00e098032b8é") == nil)
    }
}
