public import Foundation

/// Locates the known-answer vector files kept in the top-level `Vectors/` folder.
public enum VectorFiles {
    /// The URL of `Vectors/public/NAME`.
    public static func publicVector(_ name: String) -> URL? {
        Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "public")
    }

    /// The bytes of `Vectors/public/NAME`.
    public static func publicVectorData(_ name: String) throws -> Data {
        guard let url = publicVector(name) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "Vectors/public/\(name)"])
        }
        return try Data(contentsOf: url)
    }

    /// The bytes of `Vectors/formats/NAME` (GuestVault's own formats).
    public static func formatVectorData(_ name: String) throws -> Data {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "formats") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "Vectors/formats/\(name)"])
        }
        return try Data(contentsOf: url)
    }
}
