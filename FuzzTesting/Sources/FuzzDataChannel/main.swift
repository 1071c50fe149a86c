// Fuzz target: the data channel framing of `guestvault serve` (`DataChannelDecoder`: raw
// TPM commands and the MSSIM TPM_SEND_COMMAND form), fed receive by receive. The first
// input byte is the receive size (FuzzSupport/Receives.swift). The data channel counts
// bytes, so where receives end must not matter: the same stream is decoded again in one
// receive and both must give the same commands and the same outcome.
// See docs/RELIABILITY.md; run with FuzzTesting/run.sh.

import FuzzSupport
import GuestVaultCore
import GuestVaultTPM

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let receives = Receives.split(UnsafeBufferPointer(start: data, count: size))
    let split = decode(receives)
    let whole = decode(receives.isEmpty ? [] : [Array(receives.joined())])
    precondition(split.frames == whole.frames, "the commands depend on where receives end")
    precondition(split.error?.code == whole.error?.code, "the outcome depends on where receives end: \(String(describing: split.error)) / \(String(describing: whole.error))")
    return 0
}

func decode(_ receives: [[UInt8]]) -> (frames: [TPMCommandFrame], error: DataChannelError?) {
    var decoder = DataChannelDecoder()
    var frames: [TPMCommandFrame] = []
    for receive in receives {
        decoder.append(receive)
        while true {
            let before = decoder.bufferedByteCount
            let frame: TPMCommandFrame?
            do {
                frame = try decoder.next()
            } catch {
                _ = error.errorResponse
                return (frames, error)
            }
            guard let frame else {
                precondition(decoder.bufferedByteCount == before, "DataChannelDecoder.next returned nil but consumed bytes")
                break
            }
            precondition((DataChannelDecoder.commandHeaderSize...decoder.maximumCommandSize).contains(frame.bytes.count),
                         "a TPM command of \(frame.bytes.count) bytes got through")
            precondition(decoder.bufferedByteCount == before - frame.bytes.count - (frame.prefixed ? DataChannelResponse.prefixSize : 0),
                         "DataChannelDecoder consumed a different number of bytes than the command holds")
            precondition(frame.prefixed == (frame.locality != nil), "a locality without the prefix, or the reverse")
            _ = frame.encodeResponse([0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0])
            frames.append(frame)
        }
    }
    do {
        try decoder.finish()
    } catch {
        precondition(error.code == .truncated, "finish() threw \(error)")
    }
    return (frames, nil)
}
