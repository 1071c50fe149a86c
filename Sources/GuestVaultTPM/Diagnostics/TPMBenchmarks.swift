import Dispatch
import Foundation
import GuestVaultSystem

/// Measurements behind `guestvault benchmark --tpm`.
package enum TPMBenchmarks {
    /// Median nanoseconds of a TPM2_GetRandom(16) round trip through the engine and
    /// through TPMLIB_Process called directly, interleaved in one run (memory storage).
    package static func getRandom(rounds: Int) throws -> (engine: Double, direct: Double) {
        let engine = try TPMEngine.start(storage: MemoryTPMStorage())
        defer { try? engine.stop() }
        try engine.startup()
        let command = TPMCommand.getRandom(16).bytes
        let direct = LibTPMSBridge.ResponseBuffer()
        var engineTimes: [UInt64] = [], directTimes: [UInt64] = []
        for _ in 0..<1000 { _ = try engine.execute(command); var c = command; _ = try direct.process(&c) }
        for _ in 0..<rounds {
            var t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<100 { _ = try engine.execute(command) }
            var t1 = DispatchTime.now().uptimeNanoseconds
            engineTimes.append(t1 - t0)
            t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<100 { var c = command; _ = try direct.process(&c) }
            t1 = DispatchTime.now().uptimeNanoseconds
            directTimes.append(t1 - t0)
        }
        func median(_ v: [UInt64]) -> Double { Double(v.sorted()[v.count / 2]) / 100 }
        return (median(engineTimes), median(directTimes))
    }

    /// Median microseconds of a 64-byte TPM2_NV_Write round trip to a server's data
    /// channel (after defining the index with `index`).
    package static func nvWriteRoundTrip(port: UInt16, index: UInt32, rounds: Int) throws -> Double {
        let socket = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
        func roundTrip(_ command: [UInt8]) throws -> [UInt8] {
            try socket.send(command)
            var response: [UInt8] = []
            while response.count < 10 || response.count < Int(response[2..<6].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }) {
                let bytes = try socket.receive(maximum: 4096)
                guard !bytes.isEmpty else { throw TPMEngineError(.malformed, "the server closed the data channel") }
                response += bytes
            }
            return response
        }
        var define = TPMWriter()
        var pub = TPMWriter()
        pub.u32(index); pub.u16(TPMConstant.algSHA256); pub.u32(0x0006_0006); pub.u16(0); pub.u16(64)
        define.u16(0)
        define.sized(pub.bytes)
        let defined = try TPMResponse(roundTrip(TPMCommand(code: TPMConstant.ccNVDefineSpace, handles: [TPMConstant.rhOwner], authorizations: 1,
                                                           parameters: define.bytes).bytes))
        try defined.check("TPM2_NV_DefineSpace")
        var times: [Double] = []
        for i in 0..<(rounds + 20) {
            var w = TPMWriter()
            w.sized([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 64))
            w.u16(0)
            let command = TPMCommand(code: TPMConstant.ccNVWrite, handles: [TPMConstant.rhOwner, index], authorizations: 1, parameters: w.bytes).bytes
            let t0 = DispatchTime.now().uptimeNanoseconds
            let response = try TPMResponse(roundTrip(command))
            let t1 = DispatchTime.now().uptimeNanoseconds
            try response.check("TPM2_NV_Write")
            if i >= 20 { times.append(Double(t1 - t0) / 1e3) }
        }
        return times.sorted()[times.count / 2]
    }
}
