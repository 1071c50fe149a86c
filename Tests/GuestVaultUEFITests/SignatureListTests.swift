import GuestVaultCore
import GuestVaultUEFI
import Testing

/// EFI_SIGNATURE_LIST and the certificate subject walker on hand-made hostile input.
struct SignatureListTests {
    static let owner = [UInt8](repeating: 0x11, count: 16)

    /// A signature list: type, sizes, header, signatures.
    func list(_ type: EFIGUID, header: [UInt8] = [], signatures: [[UInt8]], listSize: UInt32? = nil,
              signatureSize: UInt32? = nil) -> [UInt8] {
        let size = signatureSize ?? UInt32(16 + (signatures.first?.count ?? 0))
        let total = listSize ?? UInt32(28 + header.count + signatures.count * Int(size))
        var out = type.bytes
        for value in [total, UInt32(header.count), size] {
            for index in 0..<4 { out.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
        }
        out += header
        for signature in signatures { out += Self.owner + signature }
        return out
    }

    @Test func hashesAreCounted() throws {
        let data = list(.certSHA256, signatures: [[UInt8](repeating: 1, count: 32), [UInt8](repeating: 2, count: 32)])
            + list(.certSHA384, signatures: [[UInt8](repeating: 3, count: 48)])
        let lists = try SignatureList.parseAll(data, context: "dbx")
        #expect(lists.map(\.typeName) == ["sha256", "sha384"])
        #expect(lists.map(\.entries.count) == [2, 1])
        #expect(lists[0].entries[1].owner.bytes == Self.owner)
    }

    @Test func emptyDataIsNoLists() throws {
        #expect(try SignatureList.parseAll([], context: "db").isEmpty)
    }

    @Test func hostileListsAreRefused() throws {
        let hash = [UInt8](repeating: 7, count: 32)
        let cases: [(String, [UInt8], String)] = [
            ("short", Array(list(.certSHA256, signatures: [hash]).prefix(20)), "SignatureHeaderSize"),
            ("list past the end", list(.certSHA256, signatures: [hash], listSize: 28 + 48 + 1), "SignatureListSize"),
            ("list under its header", list(.certSHA256, signatures: [hash], listSize: 27), "SignatureListSize"),
            ("huge list", list(.certSHA256, signatures: [hash], listSize: 0xFFFF_FFFF), "SignatureListSize"),
            ("zero signature size", list(.certSHA256, signatures: [hash], signatureSize: 0), "SignatureSize"),
            ("signature size not dividing", list(.certSHA256, signatures: [hash], signatureSize: 47), "SignatureSize"),
            ("sha256 of 31 bytes", list(.certSHA256, signatures: [Array(hash.prefix(31))]), "SignatureSize"),
            ("header past the list", list(.certX509, header: [1, 2, 3], signatures: [], listSize: 30), "SignatureHeaderSize"),
        ]
        for (name, data, field) in cases {
            do {
                let lists = try SignatureList.parseAll(data, base: 0x1000, context: "db")
                Issue.record("\(name): parsed \(lists.count) lists")
            } catch {
                #expect(error.kind == .signatureList, "\(name)")
                #expect(error.field == field, "\(name): \(error.message)")
                #expect(error.offset >= 0x1000, "\(name): offsets are absolute")
            }
        }
    }

    /// A minimal certificate: SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 1,
    /// SEQUENCE {}, issuer, SEQUENCE {}, subject } }.
    func certificate(subject: [UInt8]) -> [UInt8] {
        func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
            precondition(content.count < 0x10000)
            if content.count < 0x80 { return [tag, UInt8(content.count)] + content }
            return [tag, 0x82, UInt8(content.count >> 8), UInt8(content.count & 0xFF)] + content
        }
        let name = tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, [0x55, 0x04, 0x03]) + tlv(0x0C, Array("Issuer".utf8)))))
        let tbs = tlv(0xA0, tlv(0x02, [2])) + tlv(0x02, [1]) + tlv(0x30, []) + name + tlv(0x30, []) + subject
        return tlv(0x30, tlv(0x30, tbs))
    }

    func rdn(_ oid: [UInt8], _ tag: UInt8, _ value: [UInt8]) -> [UInt8] {
        let pair = [0x06, UInt8(oid.count)] + oid + [tag, UInt8(value.count)] + value
        let set = [0x30, UInt8(pair.count)] + pair
        return [0x31, UInt8(set.count)] + set
    }

    @Test func subjectIsReadInOrder() throws {
        let names = rdn([0x55, 0x04, 0x06], 0x13, Array("US".utf8)) + rdn([0x55, 0x04, 0x03], 0x0C, Array("Test CA".utf8))
            + rdn([0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x01], 0x1E, [0x00, 0x41, 0x00, 0x42])
        let der = certificate(subject: [0x30, UInt8(names.count)] + names)
        #expect(try CertificateSubject.subject(ofDER: der, context: "test") == "C=US, CN=Test CA, 1.3.6.1.4.1.311.1=AB")
    }

    @Test func controlCharactersInASubjectAreReplaced() throws {
        let names = rdn([0x55, 0x04, 0x03], 0x0C, Array("evil\u{1B}[2Jname".utf8))
        let subject = try CertificateSubject.subject(ofDER: certificate(subject: [0x30, UInt8(names.count)] + names), context: "test")
        #expect(!subject.unicodeScalars.contains { $0.value < 0x20 })
        #expect(subject.contains("\u{FFFD}"))
    }

    @Test func hostileDERIsRefused() throws {
        let names = rdn([0x55, 0x04, 0x03], 0x0C, Array("x".utf8))
        let good = certificate(subject: [0x30, UInt8(names.count)] + names)
        #expect(throws: Never.self) { try CertificateSubject.subject(ofDER: good, context: "test") }
        var cases: [[UInt8]] = [[], [0x30], [0x30, 0x80, 0x00, 0x00], [0x30, 0x85, 1, 2, 3, 4, 5], [0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
                                [0x31, 0x00], [0x30, 0x02, 0x30, 0x00], [0x1F, 0x01, 0x00]]
        for cut in 1..<good.count { cases.append(Array(good.prefix(cut))) }
        for index in 0..<good.count {
            var bytes = good
            bytes[index] = 0xFF
            cases.append(bytes)
        }
        var refused = 0
        for der in cases {
            do {
                _ = try CertificateSubject.subject(ofDER: der, context: "test")
            } catch {
                #expect(error.kind == .certificate)
                refused += 1
            }
        }
        #expect(refused >= good.count)
    }

    @Test func attributeNames() throws {
        #expect(VariableAttributes(rawValue: 0x27).shortNames == "NV+BS+RT+AT")
        #expect(VariableAttributes(rawValue: 0x100).shortNames == "0x100")
        #expect(VariableStatus(state: 0x3F) == .added && VariableStatus(state: 0x3E) == .inDeletedTransition)
        #expect(VariableStatus(state: 0x3C) == .deleted && VariableStatus(state: 0x3D) == .deleted)
        #expect(VariableStatus(state: 0x7F) == .headerOnly && VariableStatus(state: 0xFF) == .unknown)
    }
}
