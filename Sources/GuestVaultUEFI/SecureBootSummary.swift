/// What a variable store says about Secure Boot: the mode variables and the four
/// signature databases with their certificates' subjects and hash counts.
public struct SecureBootSummary: Sendable, Hashable, Codable {
    /// A one-byte mode variable: its value if it is stored, otherwise what EDK2 would
    /// derive at boot (`source` says which).
    public struct Mode: Sendable, Hashable, Codable {
        public let enabled: Bool
        /// "stored" (a live variable holds it) or "derived" (from the enrolled keys).
        public let source: String
        public let value: Int?
    }

    /// A signature database (PK, KEK, db, dbx).
    public struct Database: Sendable, Hashable, Codable {
        public struct Certificate: Sendable, Hashable, Codable {
            public let owner: EFIGUID
            /// The subject DN, or nil when the DER does not parse (see `error`).
            public let subject: String?
            public let size: Int
            public let error: String?
        }

        public let name: String
        public let vendor: EFIGUID
        public let present: Bool
        public let size: Int
        public let attributes: String?
        /// "2024-01-01T00:00:00" for a time-based authenticated variable.
        public let timestamp: String?
        public let lists: Int
        public let certificates: [Certificate]
        /// Signatures that are digests, by type ("sha256": 1).
        public let hashCounts: [String: Int]
        /// Signatures of any other type, by type name.
        public let otherCounts: [String: Int]
        /// Why the data is not a valid signature database, if it is not.
        public let error: String?

        public var hashCount: Int { hashCounts.values.reduce(0, +) }
    }

    public let secureBoot: Mode
    public let setupMode: Mode
    /// OVMF's SecureBootEnable switch (EDK2 GUID f0a30bc7-…), if stored.
    public let secureBootEnable: Int?
    /// EDK2's CustomMode, if stored.
    public let customMode: Int?
    public let pk: Database
    public let kek: Database
    public let db: Database
    public let dbx: Database

    static let hashTypes: Set<EFIGUID> = [.certSHA1, .certSHA224, .certSHA256, .certSHA384, .certSHA512,
                                          .certX509SHA256, .certX509SHA384, .certX509SHA512]

    public init(_ store: VariableStore) {
        func byte(_ name: String, _ vendor: EFIGUID) -> Int? {
            store.live(name, vendor).flatMap { $0.data.count == 1 ? Int($0.data[0]) : nil }
        }
        pk = Self.database("PK", .globalVariable, store)
        kek = Self.database("KEK", .globalVariable, store)
        db = Self.database("db", .imageSecurityDatabase, store)
        dbx = Self.database("dbx", .imageSecurityDatabase, store)
        secureBootEnable = byte("SecureBootEnable", .secureBootEnableDisable)
        customMode = byte("CustomMode", .customMode)
        // UEFI: SetupMode is 1 while no PK is enrolled. SecureBoot is 1 when a PK is
        // enrolled and the platform enables it (OVMF: SecureBootEnable, on by default).
        if let stored = byte("SetupMode", .globalVariable) {
            setupMode = Mode(enabled: stored == 1, source: "stored", value: stored)
        } else {
            setupMode = Mode(enabled: !pk.present || pk.size == 0, source: "derived", value: nil)
        }
        if let stored = byte("SecureBoot", .globalVariable) {
            secureBoot = Mode(enabled: stored == 1, source: "stored", value: stored)
        } else {
            secureBoot = Mode(enabled: !setupMode.enabled && (secureBootEnable ?? 1) == 1, source: "derived", value: nil)
        }
    }

    static func database(_ name: String, _ vendor: EFIGUID, _ store: VariableStore) -> Database {
        guard let variable = store.live(name, vendor) else {
            return Database(name: name, vendor: vendor, present: false, size: 0, attributes: nil, timestamp: nil, lists: 0,
                            certificates: [], hashCounts: [:], otherCounts: [:], error: nil)
        }
        let timestamp = variable.timestamp.flatMap { $0.isZero ? nil : $0.description }
        let context = "\(name) (variable at 0x\(String(variable.offset, radix: 16)))"
        let lists: [SignatureList]
        do {
            lists = try SignatureList.parseAll(variable.data, base: variable.dataOffset, context: context)
        } catch {
            return Database(name: name, vendor: vendor, present: true, size: variable.data.count,
                            attributes: variable.attributes.shortNames, timestamp: timestamp, lists: 0, certificates: [],
                            hashCounts: [:], otherCounts: [:], error: error.message)
        }
        var certificates: [Database.Certificate] = []
        var hashes: [String: Int] = [:], others: [String: Int] = [:]
        for list in lists {
            if list.type == .certX509 {
                var at = variable.dataOffset + list.offset + SignatureList.fixedBytes + list.header.count
                for entry in list.entries {
                    do {
                        let subject = try CertificateSubject.subject(ofDER: entry.data, base: at + 16, context: "\(context) certificate")
                        certificates.append(.init(owner: entry.owner, subject: subject, size: entry.data.count, error: nil))
                    } catch {
                        certificates.append(.init(owner: entry.owner, subject: nil, size: entry.data.count, error: error.message))
                    }
                    at += Int(list.signatureSize)
                }
            } else if hashTypes.contains(list.type) {
                hashes[list.typeName, default: 0] += list.entries.count
            } else {
                others[list.typeName, default: 0] += list.entries.count
            }
        }
        return Database(name: name, vendor: vendor, present: true, size: variable.data.count,
                        attributes: variable.attributes.shortNames, timestamp: timestamp, lists: lists.count,
                        certificates: certificates, hashCounts: hashes, otherCounts: others, error: nil)
    }
}
