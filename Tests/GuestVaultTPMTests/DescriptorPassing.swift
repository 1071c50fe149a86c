import Glibc
import GuestVaultSystem

/// What QEMU does on its control socket, for the server tests: a socketpair for the data
/// channel, and a message with a descriptor beside it (SCM_RIGHTS).
enum DescriptorPassing {
    /// A connected pair of Unix stream sockets.
    static func socketPair() throws -> (StreamSocket, StreamSocket) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemError("socketpair", path: "test", errno: errno)
        }
        return (StreamSocket(adopting: fds[0], name: "pair 0"), StreamSocket(adopting: fds[1], name: "pair 1"))
    }

    /// Sends `bytes` on `socket` with `descriptor` as SCM_RIGHTS ancillary data.
    static func send(_ bytes: [UInt8], descriptor: Int32, on socket: StreamSocket) throws {
        let space = MemoryLayout<cmsghdr>.stride + 8
        var control = [UInt8](repeating: 0, count: space)
        var payload = bytes
        let sent = payload.withUnsafeMutableBytes { data -> Int in
            control.withUnsafeMutableBytes { raw -> Int in
                let header = raw.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                header.pointee.cmsg_len = MemoryLayout<cmsghdr>.stride + MemoryLayout<Int32>.size
                header.pointee.cmsg_level = SOL_SOCKET
                header.pointee.cmsg_type = Int32(SCM_RIGHTS)
                raw.storeBytes(of: descriptor, toByteOffset: MemoryLayout<cmsghdr>.stride, as: Int32.self)
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = raw.baseAddress
                    message.msg_controllen = raw.count
                    return sendmsg(socket.descriptor, &message, Int32(MSG_NOSIGNAL))
                }
            }
        }
        guard sent == bytes.count else { throw SystemError("sendmsg", path: "test", errno: errno) }
    }

    /// Makes the kernel keep at most about `bytes` of received data for `socket`.
    static func shrinkReceiveBuffer(_ socket: StreamSocket, to bytes: Int32) {
        var value = bytes
        _ = setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<Int32>.size))
    }
}
