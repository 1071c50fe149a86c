import Foundation
import GuestVaultCrypto
import GuestVaultVectors

/// One vector file: `{source, algorithm, description, cases}`.
struct VectorFile<Case: Decodable>: Decodable {
    let source: String
    let algorithm: String
    let cases: [Case]

    static func load(_ name: String) throws -> VectorFile<Case> {
        try JSONDecoder().decode(VectorFile<Case>.self, from: VectorFiles.publicVectorData(name))
    }
}

/// Prints how many cases of a vector file ran, so CI output shows the count.
func report(_ name: String, ran: Int, of total: Int, source: String) {
    print("vectors: \(name): \(ran) of \(total) cases ran (\(source))")
}

func hex(_ text: String) -> [UInt8] {
    guard let bytes = bytes(fromHex: text) else { fatalError("bad hex in vector: \(text.prefix(16))") }
    return bytes
}
