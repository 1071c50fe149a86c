/// Reads an X.509 certificate's subject name from DER, just far enough to show it: a small
/// bounded walker (definite lengths only, at most 4 length bytes, every length checked
/// against its parent), not a certificate validator. Nothing here trusts the certificate.
public enum CertificateSubject {
    /// The subject as text, attributes in encoded order ("C=US, O=Microsoft Corporation,
    /// CN=Microsoft Corporation KEK CA 2011"). Control characters are shown as U+FFFD.
    public static func subject(ofDER der: [UInt8], base: Int = 0, context: String) throws(UEFIFormatError) -> String {
        let walker = DERWalker(bytes: der, base: base, context: context)
        // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
        //   serialNumber, signature, issuer, validity, subject, ... }, ... }
        let certificate = try walker.element(in: 0..<der.count, expecting: 0x30, "Certificate")
        let tbs = try walker.element(in: certificate.content, expecting: 0x30, "tbsCertificate")
        var cursor = tbs.content.lowerBound
        var fields: [DERWalker.Element] = []
        while fields.count < 6, cursor < tbs.content.upperBound {
            let element = try walker.element(in: cursor..<tbs.content.upperBound, expecting: nil, "tbsCertificate field")
            fields.append(element)
            cursor = element.end
        }
        // Skip the optional explicit [0] version.
        if fields.first?.tag == 0xA0 { fields.removeFirst() }
        guard fields.count >= 5 else {
            throw walker.fail("tbsCertificate", tbs.content.lowerBound, "has \(fields.count) fields before the subject, expected 5")
        }
        let subject = fields[4]
        guard subject.tag == 0x30 else {
            throw walker.fail("subject", subject.start, "tag 0x\(String(subject.tag, radix: 16)), expected a SEQUENCE")
        }
        return try walker.name(subject.content)
    }
}

struct DERWalker {
    struct Element {
        let tag: UInt8
        let start: Int
        let content: Range<Int>
        var end: Int { content.upperBound }
    }

    let bytes: [UInt8]
    let base: Int
    let context: String
    /// The most attributes read from one name.
    static let maximumAttributes = 64

    func fail(_ field: String, _ at: Int, _ reason: String) -> UEFIFormatError {
        UEFIFormatError(.certificate, context: context, field: field, offset: Int64(base) + Int64(at), reason: reason)
    }

    /// The element that starts at `range.lowerBound` and must end inside `range`.
    func element(in range: Range<Int>, expecting tag: UInt8?, _ field: String) throws(UEFIFormatError) -> Element {
        let start = range.lowerBound
        guard range.upperBound <= bytes.count, range.count >= 2 else {
            throw fail(field, start, "needs a tag and a length, \(max(range.count, 0)) bytes remain")
        }
        let found = bytes[start]
        if let tag, found != tag {
            throw fail(field, start, "tag 0x\(String(found, radix: 16)), expected 0x\(String(tag, radix: 16))")
        }
        guard found & 0x1F != 0x1F else { throw fail(field, start, "high tag numbers are not used in certificates") }
        let first = bytes[start + 1]
        var contentStart = start + 2
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7F)
            guard count >= 1, count <= 4 else {
                throw fail(field, start + 1, count == 0 ? "indefinite length is not DER" : "a length of \(count) bytes is over the limit of 4")
            }
            guard range.upperBound - contentStart >= count else {
                throw fail(field, start + 1, "the length runs past its parent")
            }
            for index in 0..<count { length = length << 8 | Int(bytes[contentStart + index]) }
            contentStart += count
        }
        guard length <= range.upperBound - contentStart else {
            throw fail(field, start, "a length of \(length) bytes runs past its parent (\(range.upperBound - contentStart) bytes left)")
        }
        return Element(tag: found, start: start, content: contentStart..<(contentStart + length))
    }

    /// Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY }.
    func name(_ range: Range<Int>) throws(UEFIFormatError) -> String {
        var parts: [String] = []
        var cursor = range.lowerBound
        while cursor < range.upperBound {
            let set = try element(in: cursor..<range.upperBound, expecting: 0x31, "RelativeDistinguishedName")
            var inner = set.content.lowerBound
            while inner < set.content.upperBound {
                guard parts.count < Self.maximumAttributes else {
                    throw fail("Name", inner, "more than \(Self.maximumAttributes) attributes")
                }
                let pair = try element(in: inner..<set.content.upperBound, expecting: 0x30, "AttributeTypeAndValue")
                let oid = try element(in: pair.content, expecting: 0x06, "AttributeType")
                let value = try element(in: oid.end..<pair.content.upperBound, expecting: nil, "AttributeValue")
                parts.append("\(Self.attributeName(Array(bytes[oid.content])))=\(text(of: value))")
                inner = pair.end
            }
            cursor = set.end
        }
        return parts.joined(separator: ", ")
    }

    func text(of value: Element) -> String {
        let content = bytes[value.content]
        let decoded: String
        switch value.tag {
        case 0x0C, 0x13, 0x16, 0x1A, 0x12:   // UTF8, Printable, IA5, Visible, Numeric
            decoded = String(decoding: content, as: UTF8.self)
        case 0x14:   // T61String: shown as Latin-1
            decoded = String(content.map { Character(Unicode.Scalar($0)) })
        case 0x1E:   // BMPString: UTF-16BE
            var units: [UInt16] = []
            var index = content.startIndex
            while index + 1 < content.endIndex {
                units.append(UInt16(content[index]) << 8 | UInt16(content[index + 1]))
                index += 2
            }
            decoded = String(decoding: units, as: UTF16.self)
        default:
            return "#" + content.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
        return UEFIText.printable(decoded)
    }

    static let knownAttributes: [[UInt8]: String] = [
        [0x55, 0x04, 0x03]: "CN", [0x55, 0x04, 0x06]: "C", [0x55, 0x04, 0x07]: "L", [0x55, 0x04, 0x08]: "ST",
        [0x55, 0x04, 0x0A]: "O", [0x55, 0x04, 0x0B]: "OU", [0x55, 0x04, 0x05]: "serialNumber",
        [0x55, 0x04, 0x09]: "street", [0x55, 0x04, 0x0C]: "title", [0x55, 0x04, 0x2A]: "GN", [0x55, 0x04, 0x04]: "SN",
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01]: "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19]: "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01]: "UID",
    ]

    /// A short name for a known attribute type, otherwise the dotted OID.
    static func attributeName(_ oid: [UInt8]) -> String {
        if let known = knownAttributes[oid] { return known }
        guard let first = oid.first, oid.count <= 64 else { return "OID" }
        var arcs: [String] = [first < 80 ? "\(first / 40).\(first % 40)" : "2.\(Int(first) - 80)"]
        var value: UInt64 = 0
        for byte in oid.dropFirst() {
            guard value >> 57 == 0 else { return "OID" }   // an arc over 64 bits
            value = value << 7 | UInt64(byte & 0x7F)
            if byte & 0x80 == 0 { arcs.append(String(value)); value = 0 }
        }
        return arcs.joined(separator: ".")
    }
}

/// Text from a variable store for a terminal or a log.
public enum UEFIText {
    /// Control and format characters (a terminal's escape sequences, bidi overrides)
    /// become U+FFFD, so a hostile name or subject cannot rewrite the screen.
    public static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator: "\u{FFFD}"
            default: scalar
            }
        }))
    }
}
