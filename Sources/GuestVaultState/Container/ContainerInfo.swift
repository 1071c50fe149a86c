public import FoundationEssentials

/// What `guestvault inspect` shows: everything readable without keys. Its JSON has the
/// same keys and values as before the id was typed (`containerID` is 32 hex digits).
public struct ContainerInfo: Sendable, Codable, Equatable {
    public let path: String
    public let vm: UUID
    public let containerID: ContainerID
    public let generation: UInt64
    public let created: UInt64
    public let committed: UInt64
    public let entries: [EntryInfo]
    public let slots: [SlotInfo]
    public let fileSize: Int64
    public let logBytes: Int64
    public let liveBytes: Int64
}

public struct EntryInfo: Sendable, Codable, Equatable {
    public let name: String
    /// "blob" or "stream" (``EntryRecord/Kind``).
    public let kind: String
    public let size: UInt64
    public let sealedGeneration: UInt64

    public init(name: String, kind: String, size: UInt64, sealedGeneration: UInt64) {
        self.name = name
        self.kind = kind
        self.size = size
        self.sealedGeneration = sealedGeneration
    }

    init(_ entry: EntryRecord) {
        self.init(name: entry.name, kind: entry.kind.name, size: entry.size, sealedGeneration: entry.sealedGeneration)
    }
}

public struct SlotInfo: Sendable, Codable, Equatable {
    public let index: Int
    public let kind: String
    public let detail: String
}

extension EntryRecord.Kind {
    /// The kind's name in ``EntryInfo`` and the CLI's output.
    public var name: String {
        switch self {
        case .blob: "blob"
        case .stream: "stream"
        }
    }
}
