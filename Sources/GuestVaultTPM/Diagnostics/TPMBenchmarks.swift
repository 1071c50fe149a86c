import Dispatch
import FoundationEssentials
import GuestVaultCore
import GuestVaultSystem

/// Measurements behind `guestvault benchmark --tpm`.
@_spi(Benchmarking) public enum TPMBenchmarks {
    /// Median nanoseconds of a TPM2_GetRandom(16) round trip through the engine and
    /// through TPMLIB_Process called directly, interleaved in one run (memory storage).
    public static func getRandom(rounds: Int) throws -> (engine: Double, direct: Double) {
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
    public static func nvWriteRoundTrip(port: UInt16, index: UInt32, rounds: Int) throws -> Double {
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
        var define = ByteWriter()
        var pub = ByteWriter()
        pub.u32(index); pub.u16(TPMConstant.algSHA256); pub.u32(0x0006_0006); pub.u16(0); pub.u16(64)
        define.u16(0)
        define.sized(pub.bytes)
        let defined = try TPMResponse(roundTrip(TPMCommand(code: TPMConstant.ccNVDefineSpace, handles: [TPMConstant.rhOwner], authorizations: 1,
                                                           parameters: define.bytes).bytes))
        try defined.check("TPM2_NV_DefineSpace")
        var times: [Double] = []
        for i in 0..<(rounds + 20) {
            var w = ByteWriter()
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

    /// Live migration of one vTPM's state as QEMU does it over two servers' control
    /// channels (docs/SWTPM-PROTOCOL.md): on the source GET_STATEBLOB of the permanent,
    /// volatile and savestate blobs (TPM_RETRY, 0x800: no such blob) and STOP; on the
    /// destination (stopped) SET_STATEBLOB
    /// of the non-empty blobs and INIT with DELETE_VOLATILE. Returns the milliseconds of
    /// that sequence in each of `rounds` (after 3 not counted) and the blob sizes.
    /// Between rounds the source is started again (INIT) and the destination stopped,
    /// untimed. The destination must accept the source's blobs: for sealed blobs it holds
    /// a copy of the source's container.
    public static func blobMigration(sourceControl: UInt16, destinationControl: UInt16, rounds: Int) throws -> (samples: [Double], blobBytes: [Int]) {
        let source = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: sourceControl))
        let destination = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: destinationControl))
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
        func read(_ socket: StreamSocket, _ count: Int) throws -> [UInt8] {
            var bytes: [UInt8] = []
            while bytes.count < count {
                let piece = try socket.receive(maximum: count - bytes.count)
                guard !piece.isEmpty else { throw TPMEngineError(.malformed, "the server closed its control channel") }
                bytes += piece
            }
            return bytes
        }
        func u32(_ b: [UInt8], _ at: Int) -> UInt32 { b[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
        func result(_ socket: StreamSocket, _ request: [UInt8], _ what: String) throws {
            try socket.send(request)
            let code = u32(try read(socket, 4), 0)
            guard code == 0 else { throw TPMEngineError(.malformed, "\(what) answered \(code)") }
        }
        func getBlob(_ type: UInt32) throws -> [UInt8] {
            try source.send(be(0x0c) + be(1) + be(type) + be(0))
            let header = try read(source, 16)
            if u32(header, 0) & 0x800 != 0 { return [] }
            guard u32(header, 0) == 0 else { throw TPMEngineError(.malformed, "GET_STATEBLOB \(type) answered \(u32(header, 0))") }
            return try read(source, Int(u32(header, 12)))
        }
        var times: [Double] = []
        var sizes: [Int] = []
        for round in 0..<(rounds + 3) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let blobs = try [1, 2, 3].map { try getBlob(UInt32($0)) }
            try result(source, be(0x0e), "STOP (source)")
            for (index, blob) in blobs.enumerated() where !blob.isEmpty {
                try result(destination, be(0x0d) + be(0) + be(UInt32(index + 1)) + be(UInt32(blob.count)) + blob, "SET_STATEBLOB \(index + 1)")
            }
            try result(destination, be(0x02) + be(1), "INIT (destination)")
            let t1 = DispatchTime.now().uptimeNanoseconds
            if round >= 3 { times.append(Double(t1 - t0) / 1e6) }
            sizes = blobs.map(\.count)
            try result(source, be(0x02) + be(0), "INIT (source)")
            try result(destination, be(0x0e), "STOP (destination)")
        }
        return (times, sizes)
    }
}
