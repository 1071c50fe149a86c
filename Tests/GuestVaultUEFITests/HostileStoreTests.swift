import GuestVaultCore
import GuestVaultUEFI
import Testing

/// Hostile variable stores: every broken length, size or checksum gives a typed
/// ``UEFIFormatError`` of category integrity that names the field and its offset, and
/// nothing traps.
@Suite(.enabled(if: OVMF.available, OVMF.skipReason))
struct HostileStoreTests {
    /// Parses, expecting a failure of `kind` on `field`.
    func expectFailure(_ bytes: [UInt8], _ kind: UEFIFormatError.Kind, field: String,
                       sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            let store = try VariableStore.parse(bytes)
            Issue.record("parsed \(store.variables.count) variables; expected a \(kind) error on \(field)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.kind == kind, "\(error.message)", sourceLocation: sourceLocation)
            #expect(error.field == field, "\(error.message)", sourceLocation: sourceLocation)
            #expect(error.category == .integrity, sourceLocation: sourceLocation)
            #expect(error.message.contains("0x"), "the message names the offset: \(error.message)", sourceLocation: sourceLocation)
        }
    }

    @Test func truncatedFilesAreRefused() throws {
        let bytes = try OVMF.microsoft
        for count in [0, 1, 16, 40, 43, 44, 55, 56, 71, 72, 99, 100, 4096, 0x5998, bytes.count - 1] {
            do {
                _ = try VariableStore.parse(Array(bytes.prefix(count)))
                Issue.record("a file cut to \(count) bytes parsed")
            } catch {
                #expect(error.kind == .firmwareVolume, "\(count): \(error.message)")
            }
        }
    }

    /// A consistent volume that ends inside the variables: every cut either ends the
    /// store cleanly at a variable boundary or names the variable field that runs past it.
    @Test func storesCutInsideTheVariablesAreRefused() throws {
        let bytes = try OVMF.microsoft
        let full = try VariableStore.parse(bytes)
        let boundaries = Set(full.variables.map(\.offset))
        var refused = 0
        for count in stride(from: 0x48 + 28 + 4, through: 0x5998, by: 7) {
            let cut = StoreEdit.cut(bytes, to: count)
            do {
                let store = try VariableStore.parse(cut)
                // Parsed: the cut fell at a variable boundary (or within its alignment
                // padding, or one byte into the next StartId), so the store holds the
                // variables before it, unchanged.
                #expect(store.variables.map(\.name) == Array(full.variables.prefix(store.variables.count)).map(\.name))
                #expect(store.variables.count < full.variables.count || count >= full.endOfVariables)
                #expect(store.endOfVariables <= count)
                #expect(boundaries.contains(count) || count - store.endOfVariables <= 4 || store.variables.isEmpty && count < 0x64 + 2,
                        "cut at \(count): \(store.variables.count) variables end at \(store.endOfVariables)")
            } catch {
                #expect(error.kind == .variable, "\(count): \(error.message)")
                #expect(["header", "NameSize", "DataSize", "StartId"].contains(error.field), "\(count): \(error.message)")
                refused += 1
            }
        }
        #expect(refused > 100)
    }

    @Test func dataSizePastTheStoreEnd() throws {
        var bytes = try OVMF.microsoft
        let pk = try StoreEdit.offset(of: "PK", in: bytes)
        let storeEnd = 0x48 + 0x3FFB8
        let dataOffset = pk + 60 + 6
        StoreEdit.put32(&bytes, pk + 40, UInt32(storeEnd - dataOffset + 1))
        expectFailure(bytes, .variable, field: "DataSize")
        do {
            _ = try VariableStore.parse(bytes)
        } catch {
            #expect(error.offset == Int64(pk + 40), "the error names the DataSize field's offset")
            #expect(error.message.contains("run past the store's end"))
        }
    }

    @Test(arguments: [UInt32(0x0010_0001), 0x7FFF_FFFF, 0xFFFF_FFFF])
    func hugeDataSize(_ size: UInt32) throws {
        var bytes = try OVMF.microsoft
        let db = try StoreEdit.offset(of: "db", in: bytes)
        StoreEdit.put32(&bytes, db + 40, size)
        expectFailure(bytes, .variable, field: "DataSize")
    }

    @Test(arguments: [UInt32(0), 1, 7, 4097, 0xFFFF_FFFF, 0x8000_0000])
    func badNameSize(_ size: UInt32) throws {
        var bytes = try OVMF.microsoft
        let kek = try StoreEdit.offset(of: "KEK", in: bytes)
        StoreEdit.put32(&bytes, kek + 36, size)
        expectFailure(bytes, .variable, field: "NameSize")
    }

    @Test func nameWithoutItsNUL() throws {
        var bytes = try OVMF.microsoft
        let kek = try StoreEdit.offset(of: "KEK", in: bytes)
        bytes[kek + 60 + 6] = 0x41   // "KEK\0" -> "KEKA"
        expectFailure(bytes, .variable, field: "Name")
    }

    @Test func nameSizeAtTheStoreEnd() throws {
        // The last variable's name runs past the store's end.
        var bytes = StoreEdit.cut(try OVMF.microsoft, to: 0x5944 + 60 + 10)
        expectFailure(bytes, .variable, field: "NameSize")
        bytes = StoreEdit.cut(try OVMF.microsoft, to: 0x5944 + 30)
        expectFailure(bytes, .variable, field: "header")
    }

    @Test func badChecksum() throws {
        var bytes = try OVMF.microsoft
        bytes[44] ^= 0x01   // Attributes, without fixing the checksum
        expectFailure(bytes, .firmwareVolume, field: "Checksum")
        bytes = try OVMF.microsoft
        bytes[50] ^= 0x80   // the checksum itself
        expectFailure(bytes, .firmwareVolume, field: "Checksum")
    }

    @Test func badVolumeFields() throws {
        let original = try OVMF.microsoft
        var bytes = original
        bytes[40] = UInt8(ascii: "X")
        expectFailure(bytes, .firmwareVolume, field: "Signature")

        bytes = original
        bytes[16] ^= 1
        StoreEdit.fixChecksum(&bytes)
        expectFailure(bytes, .firmwareVolume, field: "FileSystemGuid")

        bytes = original
        StoreEdit.put64(&bytes, 32, UInt64(original.count) + 1)
        StoreEdit.fixChecksum(&bytes)
        expectFailure(bytes, .firmwareVolume, field: "FvLength")

        bytes = original
        StoreEdit.put64(&bytes, 32, .max)
        StoreEdit.fixChecksum(&bytes)
        expectFailure(bytes, .firmwareVolume, field: "FvLength")

        for length in [0, 63, 73, 0xFFFF] {
            bytes = original
            StoreEdit.put16(&bytes, 48, length)
            expectFailure(bytes, .firmwareVolume, field: "HeaderLength")
        }

        // Block map: one block too few, an overflowing product, no terminator.
        bytes = original
        StoreEdit.put32(&bytes, 56, 131)
        StoreEdit.fixChecksum(&bytes)
        expectFailure(bytes, .firmwareVolume, field: "BlockMap")
        bytes = original
        StoreEdit.put32(&bytes, 56, 0xFFFF_FFFF)
        StoreEdit.put32(&bytes, 60, 0xFFFF_FFFF)
        StoreEdit.put32(&bytes, 64, 0xFFFF_FFFF)
        StoreEdit.put32(&bytes, 68, 0xFFFF_FFFF)
        StoreEdit.fixChecksum(&bytes)
        do {
            _ = try VariableStore.parse(bytes)
            Issue.record("a block map without a terminator parsed")
        } catch {
            #expect(error.kind == .firmwareVolume)
        }
    }

    @Test func badStoreHeader() throws {
        let original = try OVMF.microsoft
        var bytes = original
        bytes[0x48] ^= 1
        expectFailure(bytes, .variableStore, field: "Signature")
        for size: UInt32 in [0, 27, 0x84000 - 0x48 + 1, 0xFFFF_FFFF] {
            bytes = original
            StoreEdit.put32(&bytes, 0x48 + 16, size)
            expectFailure(bytes, .variableStore, field: "Size")
        }
        bytes = original
        bytes[0x48 + 20] = 0xFF
        expectFailure(bytes, .variableStore, field: "Format")
        bytes = original
        bytes[0x48 + 21] = 0x00
        expectFailure(bytes, .variableStore, field: "State")
    }

    @Test func garbageAfterTheLastVariable() throws {
        var bytes = try OVMF.microsoft
        bytes[0x5998] = 0x12
        expectFailure(bytes, .variable, field: "StartId")
    }

    @Test func tooManyVariables() throws {
        var limits = VariableStore.Limits()
        limits.maximumVariables = 10
        let bytes = try OVMF.microsoft
        do {
            _ = try VariableStore.parse(bytes, limits: limits)
            Issue.record("more than 10 variables parsed with a limit of 10")
        } catch {
            #expect(error.field == "variable count")
        }
    }

    /// Every bit of the volume header, the store header and the first two variable
    /// headers, flipped one at a time: a store or a typed error, never a trap; and a
    /// store that parses gives a summary.
    @Test func bitFlipSweepOverTheHeaders() throws {
        let original = try OVMF.bytes("OVMF_VARS.ms.fd")
        var parsed = 0, refused = 0
        for index in 0..<(0x48 + 28 + 2 * 0x60) {
            for bit in 0..<8 {
                var bytes = original
                bytes[index] ^= 1 << bit
                do {
                    let store = try VariableStore.parse(bytes)
                    _ = SecureBootSummary(store)
                    parsed += 1
                } catch {
                    #expect(error.category == .integrity)
                    refused += 1
                }
            }
        }
        #expect(refused > 0 && parsed > 0)
    }

    /// The same over the PK and db variables: header, name, signature list header and the
    /// certificate's DER. The summary reports a broken database instead of failing.
    @Test func bitFlipSweepOverTheSignatureDatabases() throws {
        // The 128 KiB template holds the same variables; each flip copies less.
        let original = try OVMF.bytes("OVMF_VARS.ms.fd")
        var databaseErrors = 0
        for name in ["PK", "db"] {
            let start = try StoreEdit.offset(of: name, in: original)
            for index in start..<(start + 60 + 8 + 28 + 16 + 96) {
                for bit in 0..<8 {
                    var bytes = original
                    bytes[index] ^= 1 << bit
                    guard let store = try? VariableStore.parse(bytes) else { continue }
                    let summary = SecureBootSummary(store)
                    for database in [summary.pk, summary.db] where database.error != nil || database.certificates.contains(where: { $0.error != nil }) {
                        databaseErrors += 1
                    }
                }
            }
        }
        #expect(databaseErrors > 0)
    }
}
