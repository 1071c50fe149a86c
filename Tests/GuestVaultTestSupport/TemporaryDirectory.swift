public import Foundation
import GuestVaultSystem

/// A fresh directory under the system temporary directory, removed on deinit.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ name: String = "guestvault-test") {
        let base = FileManager.default.temporaryDirectory.path
        path = "\(base)/\(name)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Every file under the directory with its bytes, to prove nothing changed.
    public func snapshot() -> [String: Data] {
        var result: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let item = enumerator?.nextObject() as? String {
            let full = "\(path)/\(item)"
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue {
                result[item] = FileManager.default.contents(atPath: full)
            } else {
                result[item + "/"] = Data()
            }
        }
        return result
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

public func mode(of path: String) -> UInt32 {
    (try? FileSystem.permissions(path).mode) ?? 0
}
