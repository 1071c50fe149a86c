import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultCore
import Testing

@Suite struct EngineTests {
    @Test func libtpmsVersion() {
        #expect(LibTPMS.version.hasPrefix("0."))
    }

    @Test func oneEnginePerProcess() throws {
        try EngineGate.run {
            let engine = try TPMEngine.start(storage: MemoryTPMStorage())
            let error = try #require(throws: TPMEngineError.self) { try TPMEngine.start(storage: MemoryTPMStorage()) }
            #expect(error.code == .alreadyRunning)
            try engine.stop()
            let again = try TPMEngine.start(storage: MemoryTPMStorage())
            try again.stop()
            #expect(throws: TPMEngineError.self) { try again.execute(TPMCommand.getRandom(8).bytes) }
        }
    }

    @Test func commandsAndStateAcrossRestarts() throws {
        try EngineGate.run {
            let storage = MemoryTPMStorage()
            let engine = try TPMEngine.start(storage: storage)
            try engine.startup()
            #expect(try engine.getRandom(32).count == 32)
            let digest = try SHA256.hash(Array("measurement".utf8))
            try engine.pcrExtend(16, sha256: digest)
            let pcr = try engine.pcrRead(16)
            #expect(pcr == (try SHA256.hash([UInt8](repeating: 0, count: 32) + digest)))
            let attributes: UInt32 = 0x0006_0006   // ownerwrite|authwrite|ownerread|authread
            try engine.nvDefineSpace(0x0150_0016, size: 64, attributes: attributes)
            let data = Array("sealed by GuestVault".utf8)
            try engine.nvWrite(0x0150_0016, data)
            #expect(try engine.nvRead(0x0150_0016, size: data.count) == data)
            #expect(storage.snapshot[.permanent] != nil, "the NV write reached the storage")

            // Volatile state: stored on request, resumed without a new Startup.
            try engine.stop(storeVolatile: true)
            let resumed = try TPMEngine.start(storage: storage)
            #expect(try resumed.pcrRead(16) == pcr, "PCRs survive through the stored volatile state")
            #expect(try resumed.nvRead(0x0150_0016, size: data.count) == data)
            try resumed.stop()

            // Without the volatile state the TPM starts fresh: NV stays, PCRs reset.
            let fresh = try TPMEngine.start(storage: storage, deleteVolatile: true)
            try fresh.startup()
            #expect(try fresh.pcrRead(16) == [UInt8](repeating: 0, count: 32))
            #expect(try fresh.nvRead(0x0150_0016, size: data.count) == data)
            try fresh.stop()
        }
    }

    @Test func everyNVWriteIsCommittedToTheContainerBeforeTheResponse() throws {
        let dir = TemporaryDirectory("engine")
        let vault = try KeyVault.createFileVault(at: dir.file("vault"))
        let path = dir.file("vm.state")
        let vm = UUID()
        try EngineGate.run {
            let storage = ContainerTPMStorage(container: try GuestStateContainer.create(at: path, vm: vm, vault: vault))
            let engine = try TPMEngine.start(storage: storage)
            try engine.startup()
            try engine.nvDefineSpace(0x0150_0001, size: 16, attributes: 0x0006_0006)
            for i in 0..<5 {
                let before = storage.commits
                try engine.nvWrite(0x0150_0001, [UInt8](repeating: UInt8(i), count: 16))
                #expect(storage.commits > before)
                // A reader of the file sees the write as soon as the response is back.
                let reader = try GuestStateContainer.open(at: path)
                try reader.unlock(with: UnlockCredentials(vault: vault))
                #expect(reader.generation == storage.info.generation)
            }
            try engine.stop()
        }
        try EngineGate.run {
            let container = try GuestStateContainer.open(at: path, access: .readWrite)
            try container.unlock(with: UnlockCredentials(vault: vault))
            let engine = try TPMEngine.start(storage: ContainerTPMStorage(container: container))
            try engine.startup()
            #expect(try engine.nvRead(0x0150_0001, size: 16) == [UInt8](repeating: 4, count: 16))
            try engine.stop()
        }
    }

    @Test func stateCheckAcceptsRealStateAndRefusesGarbage() throws {
        try EngineGate.run {
            let storage = MemoryTPMStorage()
            let engine = try TPMEngine.start(storage: storage)
            try engine.startup()
            try engine.stop()
            let permanent = try #require(storage.snapshot[.permanent])
            try TPMStateCheck.validate(permanent: permanent, volatile: nil, savestate: nil)
            var garbage = permanent
            garbage[garbage.count / 2] ^= 0xff
            #expect(throws: TPMEngineError.self) { try TPMStateCheck.validate(permanent: Array(permanent.prefix(100)), volatile: nil, savestate: nil) }
        }
    }
}

@Suite struct ManufactureTests {
    @Test func manufactureWithEndorsementKeys() throws {
        let dir = TemporaryDirectory("manufacture")
        let vault = try KeyVault.createFileVault(at: dir.file("vault"))
        let report = try EngineGate.run {
            let container = try GuestStateContainer.create(at: dir.file("vm.state"), vm: UUID(), vault: vault)
            return try TPMManufacturer.manufacture(into: container, options: .init(createEndorsementKeys: true, issueCertificate: { key in
                // A stand-in certificate: the test only checks it lands in NV.
                switch key {
                case .rsa(let modulus, _): return [0x30] + Array(modulus.prefix(40))
                case .ecc(_, let x, _): return [0x30] + x
                }
            }))
        }
        #expect(report.rsaEKPersistentHandle == 0x8101_0001 && report.eccEKPersistentHandle == 0x8101_0002)
        #expect(report.permanentStateBytes > 1000)
        try EngineGate.run {
            let container = try GuestStateContainer.open(at: dir.file("vm.state"), access: .readWrite)
            try container.unlock(with: UnlockCredentials(vault: vault))
            let engine = try TPMEngine.start(storage: ContainerTPMStorage(container: container))
            try engine.startup()
            let rsa = try TPMPublicKey(publicArea: engine.readPublic(EKTemplates.rsaPersistentHandle))
            let ecc = try TPMPublicKey(publicArea: engine.readPublic(EKTemplates.eccPersistentHandle))
            guard case .rsa(let modulus, let exponent) = rsa, case .ecc(let curve, let x, let y) = ecc else {
                Issue.record("wrong key types"); return
            }
            #expect(modulus.count == 256 && exponent == 65537)
            #expect(curve == TPMConstant.eccNistP256 && x.count == 32 && y.count == 32)
            #expect(try engine.nvRead(EKTemplates.rsaCertificateIndex, size: 41) == [0x30] + Array(modulus.prefix(40)))
            #expect(try engine.nvRead(EKTemplates.eccCertificateIndex, size: 33) == [0x30] + x)
            // Only the SHA-256 bank is active.
            #expect(try engine.pcrRead(0).count == 32)
            try engine.stop()
        }
    }
}
