#if canImport(Glibc)
import Glibc
#endif

/// Directory entries' names, read where readdir(3) left them.
public enum DirectoryEntry {
    /// The names in `directory` (without "." and ".."), in readdir's order.
    public static func names(of directory: String) throws -> [String] {
        guard let handle = opendir(directory) else { throw SystemError("opendir", path: directory, errno: errno) }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = name(entry)
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The entry's name: the bytes of `d_name` up to its terminating NUL, read in place.
    /// (Copying the `d_name` field as a 256-byte value reads past the end of a short
    /// record, into the next record or past the end of readdir's buffer: valgrind
    /// reported those bytes as uninitialised.)
    static func name(_ entry: UnsafePointer<dirent>) -> String {
        guard let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name) else { return "" }
        let field = (UnsafeRawPointer(entry) + offset).assumingMemoryBound(to: CChar.self)
        return String(decoding: UnsafeRawBufferPointer(start: field, count: strnlen(field, 256)), as: UTF8.self)
    }
}
