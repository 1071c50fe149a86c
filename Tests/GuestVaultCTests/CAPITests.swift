import Foundation
@testable import GuestVaultC
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import Testing

/// A fresh directory for one test.
private func scratchDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("gv-capi-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false,
                                            attributes: [.posixPermissions: 0o700])
    return path
}

@Suite("C API status codes")
struct CAPIStatusTests {
    @Test("every error category has its own fixed negative status, the negated CLI exit code")
    func categoriesAreStable() {
        let codes = ErrorCategory.allCases.map(Status.code)
        #expect(Set(codes).count == ErrorCategory.allCases.count)
        #expect(codes.allSatisfy { $0 < 0 })
        for category in ErrorCategory.allCases {
            #expect(Status.code(category) == -category.exitCode)
            #expect(Status.category(Status.code(category)) == category)
            #expect(String(cString: gv_strerror(Status.code(category))) != "unknown status code")
        }
        #expect(String(cString: gv_strerror(0)) == "success")
        #expect(String(cString: gv_strerror(-99)) == "unknown status code")
    }

    @Test("a module error keeps its category through the boundary", arguments: [
        (CAPIError(.capiUsage, "x") as any Error, ErrorCategory.usage),
        (CAPIError(.capiBlobIntegrity, "x"), .integrity),
        (CAPIError(.capiCallback, "x"), .peer),
        (VaultError(.wrongPassphrase, subject: "v", reason: "r"), .keys),
    ])
    func mapping(error: any Error, category: ErrorCategory) {
        #expect(Status.category(of: error) == category)
    }
}

@Suite("C API handles and arguments")
struct CAPIHandleTests {
    @Test("a closed, foreign or NULL handle is refused with a usage error, never dereferenced")
    func deadHandles() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var vault: OpaquePointer?
        #expect(gv_vault_create_file("\(dir)/vault", nil, 0, 0, &vault) == 0)
        var generation: UInt64 = 0
        // A vault handle is not a container handle.
        #expect(gv_container_generation(vault, &generation) == Status.code(.usage))
        #expect(gv_container_generation(nil, &generation) == Status.code(.usage))
        #expect(gv_container_generation(OpaquePointer(bitPattern: 0x1234_5670), &generation) == Status.code(.usage))
        #expect(gv_vault_close(vault) == 0)
        #expect(gv_vault_close(vault) == Status.code(.usage))
        #expect(String(cString: gv_last_error_message()).contains("not an open vault handle"))
    }

    @Test("buffers handed to C record their size and hold the bytes")
    func buffers() throws {
        let (pointer, count) = try CBuffer.copy([1, 2, 3] as [UInt8])
        #expect(count == 3)
        #expect(Array(UnsafeBufferPointer(start: pointer, count: 3)) == [1, 2, 3])
        #expect((UnsafeRawPointer(pointer) - CBuffer.prefix).load(as: UInt64.self) == 3)
        gv_buffer_free(pointer)
        let (string, length) = try CBuffer.string("vm.runtime")
        #expect(length == 10 && String(cString: string) == "vm.runtime")
        gv_buffer_free(string)
    }
}

@Suite("Sealed blobs under a VM's key")
struct VMSealedBlobTests {
    @Test("round trip; another VM, context, vault or a flipped bit fails as integrity")
    func roundTrip() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vault = try KeyVault.createFileVault(at: "\(dir)/a")
        let other = try KeyVault.createFileVault(at: "\(dir)/b")
        let vm = UUID()
        let plain = Array("the TPM's savestate".utf8)
        let sealed = try VMSealedBlob.seal(plain, vault: vault, vm: vm, context: "tpm.savestate")
        #expect(sealed.count == plain.count + VMSealedBlob.overhead)
        #expect(Array(sealed.prefix(4)) == Array("GVB1".utf8))
        #expect(try VMSealedBlob.open(sealed, vault: vault, vm: vm, context: "tpm.savestate") == plain)
        var flipped = sealed
        flipped[flipped.count - 1] ^= 1
        for (blob, key, machine, context) in [(flipped, vault, vm, "tpm.savestate"), (sealed, other, vm, "tpm.savestate"),
                                              (sealed, vault, UUID(), "tpm.savestate"), (sealed, vault, vm, "tpm.volatile"),
                                              (Array(sealed.prefix(40)), vault, vm, "tpm.savestate")] {
            #expect(throws: CAPIError.self) { try VMSealedBlob.open(blob, vault: key, vm: machine, context: context) }
            do { _ = try VMSealedBlob.open(blob, vault: key, vm: machine, context: context) } catch {
                #expect(Status.category(of: error) == .integrity)
            }
        }
        #expect(throws: CAPIError.self) { try VMSealedBlob.seal(plain, vault: vault, vm: vm, context: String(repeating: "x", count: 256)) }
    }
}

/// The overhead of the C boundary on a blob seal: the same seal through Swift and
/// through the exported `gv_blob_seal` (argument checks, copies in and out, malloc,
/// the handle lookup), interleaved in the same run. Prints medians; asserts nothing
/// about time.
@Suite("C API seal overhead (figures, not assertions)")
struct CAPISealOverhead {
    @Test("median of a 4 KiB blob seal: Swift and through gv_blob_seal")
    func overhead() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var handle: OpaquePointer?
        #expect(gv_vault_create_file("\(dir)/vault", nil, 0, 0, &handle) == 0)
        defer { _ = gv_vault_close(handle) }
        let vault = try Handles.lookup(handle, VaultHandle.self, "vault").vault
        let vm = UUID(uuidString: "6f1e7a52-2b0c-4d3e-9a51-0c7d1b2e3f40")!
        for size in [1024, 4096, 65536] {
            let plain = [UInt8](repeating: 0x5A, count: size)
            var swift: [UInt64] = [], c: [UInt64] = []
            for _ in 0..<2000 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try VMSealedBlob.seal(plain, vault: vault, vm: vm, context: "tpm.savestate")
                let t1 = DispatchTime.now().uptimeNanoseconds
                var out: UnsafeMutablePointer<UInt8>?
                var count: UInt = 0
                let status = plain.withUnsafeBufferPointer {
                    gv_blob_seal(handle, "6f1e7a52-2b0c-4d3e-9a51-0c7d1b2e3f40", "tpm.savestate", $0.baseAddress, UInt(size), &out, &count)
                }
                let t2 = DispatchTime.now().uptimeNanoseconds
                #expect(status == 0)
                gv_buffer_free(out)
                swift.append(t1 - t0)
                c.append(t2 - t1)
            }
            let median = { (v: [UInt64]) in Double(v.sorted()[v.count / 2]) / 1000 }
            print("seal \(size) B: Swift \(median(swift)) µs, gv_blob_seal \(median(c)) µs (median of 2000, interleaved)")
        }
    }
}
