import CLibFuzzer

/// The body of an `LLVMFuzzerCustomMutator`: libFuzzer's own mutation, then `repair`
/// on most results (seven in eight), so that the fuzzer both gets past the format's
/// unkeyed checks and keeps trying inputs whose checks are wrong.
public func mutateAndRepair(
    _ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int, _ seed: UInt32,
    repair: (UnsafeMutableBufferPointer<UInt8>) -> Void
) -> Int {
    let newSize = LLVMFuzzerMutate(data, size, maxSize)
    if seed % 8 != 0 {
        repair(UnsafeMutableBufferPointer(start: data, count: newSize))
    }
    return newSize
}
