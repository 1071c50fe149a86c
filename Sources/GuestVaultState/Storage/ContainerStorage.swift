/// Where a container's bytes live: the log scanner and the container run over this
/// small protocol, so the format code is the same over a file (``FileStorage``) and over
/// memory (``MemoryStorage``, for tests and fuzzers).
///
/// Reads and writes are positional and complete or throw; a read returns fewer bytes
/// than asked only at the end.
protocol ContainerStorage: AnyObject {
    /// The path or name, for messages.
    var name: String { get }
    func size() throws -> Int64
    func read(at offset: Int64, count: Int) throws -> [UInt8]
    /// Reads up to `count` bytes at `offset` into `buffer` from `bufferOffset`.
    func read(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int
    func write(_ bytes: ArraySlice<UInt8>, at offset: Int64) throws
    /// Makes written data durable.
    func syncData() throws
    /// Makes written data and metadata (the size) durable.
    func sync() throws
    /// The offset of the first non-zero byte in `count` bytes from `offset`, or nil.
    func firstNonZeroByte(at offset: Int64, count: Int64) throws -> Int64?
    /// A new, empty storage that replaces this one when published (a rewrite).
    func stageReplacement() throws -> any StagedContainerStorage
}

extension ContainerStorage {
    func write(_ bytes: [UInt8], at offset: Int64) throws { try write(bytes[...], at: offset) }
}

/// A replacement being written: durable and visible only once ``publish()`` returns,
/// discarded if it is released unpublished.
protocol StagedContainerStorage: AnyObject {
    var storage: any ContainerStorage { get }
    /// Makes the staged bytes the container's, atomically; returns the storage to use
    /// from now on.
    func publish() throws -> any ContainerStorage
}
