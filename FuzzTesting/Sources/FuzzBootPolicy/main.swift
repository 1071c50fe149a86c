// Fuzz target: the golden boot policy entry (`BootPolicy.decode`, entry policy.pcrs) and
// the PCR selection parser behind `guestvault policy` and serve's host channel. The first
// input byte chooses: bit 0 parses the rest as a PCR selection ("0-7", "0,2,7", "all"),
// otherwise as a policy entry.
// Errors must be BootPolicyErrors of category integrity; a policy that decodes must give
// at most 24 PCRs of 32 bytes each, encode, decode to itself, and compare without error.
// See docs/TRUSTED-LAUNCH.md and docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import GuestVaultCore
import GuestVaultTPMContainer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 != 0 {
        do {
            let selection = try BootPolicy.selection(String(decoding: bytes, as: UTF8.self))
            precondition(!selection.isEmpty && selection.allSatisfy { (0..<24).contains($0) })
        } catch let error as BootPolicyError {
            precondition(error.code.category == .integrity && !error.message.isEmpty)
        } catch {
            preconditionFailure("a selection error that is not a BootPolicyError: \(error)")
        }
        return 0
    }
    let policy: BootPolicy
    do {
        policy = try BootPolicy.decode(bytes)
    } catch let error as BootPolicyError {
        precondition(error.code.category == .integrity && !error.message.isEmpty)
        return 0
    } catch {
        preconditionFailure("a decode error that is not a BootPolicyError: \(error)")
    }
    do {
        let values = try policy.values()
        precondition(!values.isEmpty && values.count <= 24 && values.allSatisfy { (0..<24).contains($0.key) && $0.value.count == 32 })
        let again = try BootPolicy.decode(policy.encoded())
        precondition(again == policy, "a decoded policy must survive its own encoding")
        let none = try policy.mismatches(current: values)
        precondition(none.isEmpty)
        _ = try policy.mismatches(current: [:])
    } catch {
        preconditionFailure("a decoded policy failed afterwards: \(error)")
    }
    return 0
}
