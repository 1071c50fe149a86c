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
}
