// Fuzz target: the control channel decoder of `guestvault serve` (`ControlDecoder`, the
// swtpm control protocol), fed receive by receive as the server feeds it, and the swtpm
// envelope of every SET_STATEBLOB blob decoded as the server does. The first input byte
// is the receive size (FuzzSupport/Receives.swift). Checks the decoder's contract: each
// request consumes bytes, a failed decoder keeps failing with the same error, and
// requests stay within the limits. See docs/RELIABILITY.md; run with FuzzTesting/run.sh.

import FuzzSupport
import GuestVaultCore
import GuestVaultTPM

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var decoder = ControlDecoder()
    var failure: ControlChannelError?
    receiving: for receive in Receives.split(UnsafeBufferPointer(start: data, count: size)) {
        decoder.append(receive)
        while true {
            let before = decoder.bufferedByteCount
            let request: ControlRequest?
            do {
                request = try decoder.next()
            } catch {
                failure = error
                break receiving
            }
            guard let request else {
                precondition(decoder.bufferedByteCount == before, "ControlDecoder.next returned nil but consumed bytes")
                break
            }
            precondition(decoder.bufferedByteCount < before, "ControlDecoder.next returned a request without consuming bytes")
            check(request, decoder: decoder)
        }
    }
    if let failure {
        // After an error the decoder stays failed, with the same error.
        do {
            _ = try decoder.next()
            preconditionFailure("ControlDecoder recovered after \(failure)")
        } catch {
            precondition(error == failure, "ControlDecoder threw \(error) after \(failure)")
        }
        _ = failure.reply
        _ = failure.description
    } else {
        do {
            try decoder.finish()
        } catch {
            precondition(error.code == .truncated, "finish() threw \(error)")
        }
    }
    return 0
}

func check(_ request: ControlRequest, decoder: ControlDecoder) {
    switch request {
    case .hashData(let bytes):
        precondition(bytes.count <= ControlChannelLimits.maximumHashData, "HASH_DATA of \(bytes.count) bytes got through")
    case .setStateBlob(let type, _, let blob):
        precondition(blob.count <= decoder.maximumStateBlob, "a state blob of \(blob.count) bytes got through")
        // What the server does with it (TPMServer+Control.swift).
        if let contents = try? SwtpmStateFile.decode(blob, file: "SET_STATEBLOB \(type)", key: nil, form: .controlChannelBlob) {
            precondition(contents.payload.count <= blob.count, "an unwrapped state blob is longer than its envelope")
        }
    default:
        break
    }
}
