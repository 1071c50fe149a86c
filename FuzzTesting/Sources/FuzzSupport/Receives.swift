/// How the server-channel targets turn one fuzz input into the receives of a connection:
/// the first byte is the size of each receive (0: everything in one receive), the rest
/// is the byte stream. So the fuzzer controls where receives end, which the control
/// channel's framing depends on (docs/SWTPM-PROTOCOL.md) and both decoders must resume
/// across.
public enum Receives {
    public static func split(_ input: UnsafeBufferPointer<UInt8>) -> [[UInt8]] {
        guard let size = input.first else { return [] }
        let stream = input.dropFirst()
        guard !stream.isEmpty else { return [] }
        guard size > 0 else { return [Array(stream)] }
        return stride(from: stream.startIndex, to: stream.endIndex, by: Int(size)).map {
            Array(stream[$0..<min($0 + Int(size), stream.endIndex)])
        }
    }
}
