import GuestVaultCore
import GuestVaultState

@_cdecl("gv_stream_open")
public func gv_stream_open(
    _ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    boundary {
        let c = try Handles.lookup(handle, ContainerHandle.self, "container")
        let name = try Arguments.string(name, "name")
        let out = try Arguments.output(out, "out")
        let (size, chunks) = try c.with { container -> (UInt64, UInt64) in
            guard let entry = container.info.entries.first(where: { $0.name == name }) else {
                throw CAPIError(.init("capi.noSuchEntry", .notFound), "\(container.path) entry \(name): no such entry")
            }
            guard entry.kind == "stream" else {
                throw CAPIError.usage("\(container.path) entry \(name) is a blob; read it with gv_container_get")
            }
            guard entry.size > 0 else { return (0, 0) }
            // Every chunk but the last is full: the first one gives the chunk size.
            let first = try container.readChunk(name, index: 0)
            guard !first.isEmpty else {
                throw CAPIError(.capiBlobIntegrity, "\(container.path) entry \(name): its first chunk is empty")
            }
            let chunk = UInt64(first.count)
            return (entry.size, entry.size / chunk + (entry.size % chunk == 0 ? 0 : 1))
        }
        out.pointee = Handles.register(StreamHandle(container: c, name: name, size: size, chunkCount: chunks))
    }
}

@_cdecl("gv_stream_size")
public func gv_stream_size(
    _ handle: OpaquePointer?, _ size: UnsafeMutablePointer<UInt64>?, _ chunks: UnsafeMutablePointer<UInt64>?
) -> Int32 {
    boundary {
        let stream = try Handles.lookup(handle, StreamHandle.self, "stream")
        size?.pointee = stream.size
        chunks?.pointee = stream.chunkCount
    }
}

@_cdecl("gv_stream_read_chunk")
public func gv_stream_read_chunk(
    _ handle: OpaquePointer?, _ index: UInt64, _ data: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ length: UnsafeMutablePointer<UInt>?
) -> Int32 {
    boundary {
        let stream = try Handles.lookup(handle, StreamHandle.self, "stream")
        let dataOut = try Arguments.output(data, "data")
        let lengthOut = try Arguments.output(length, "len")
        guard index < stream.chunkCount else {
            throw CAPIError(.capiUsage, "entry \(stream.name) has no chunk \(index) (it has \(stream.chunkCount))")
        }
        let bytes = try stream.container.with { try $0.readChunk(stream.name, index: index) }
        let (buffer, count) = try CBuffer.copy(bytes)
        dataOut.pointee = buffer
        lengthOut.pointee = UInt(count)
    }
}

@_cdecl("gv_stream_close")
public func gv_stream_close(_ handle: OpaquePointer?) -> Int32 {
    guard let handle else { return Status.ok }
    return boundary { _ = try Handles.remove(handle, StreamHandle.self, "stream") }
}
