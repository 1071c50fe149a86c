#if canImport(Glibc)
import Glibc
#endif

/// A stream socket (TCP or Unix), closed when released. The one place GuestVault makes
/// socket system calls: listening, accepting, reading, writing, receiving a file
/// descriptor (SCM_RIGHTS) and polling.
public final class StreamSocket: @unchecked Sendable {
    public let descriptor: Int32
    public let name: String
    private var closed = false

    public init(adopting descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        _ = Glibc.close(descriptor)
    }

    /// An address to listen on or connect to: `tcp:HOST:PORT` or `unix:PATH`.
    public enum Address: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: UInt16)
        case unix(path: String)

        public init?(_ text: String) {
            if text.hasPrefix("unix:") {
                let path = String(text.dropFirst(5))
                guard !path.isEmpty, path.utf8.count < 108 else { return nil }
                self = .unix(path: path)
            } else if text.hasPrefix("tcp:") {
                let rest = text.dropFirst(4)
                guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
                var host = String(rest[..<colon])
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
            } else {
                return nil
            }
        }

        public var description: String {
            switch self {
            case .tcp(let host, let port): "tcp:\(host):\(port)"
            case .unix(let path): "unix:\(path)"
            }
        }
    }

    /// A listening socket on `address`. A Unix socket path that exists as a socket is
    /// replaced; the socket file is made 0600.
    public static func listen(_ address: Address, backlog: Int32 = 8) throws -> StreamSocket {
        switch address {
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST
            var info: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &info)
            guard status == 0, let first = info else {
                throw SystemError("resolve (\(String(cString: gai_strerror(status))))", path: address.description, errno: EINVAL)
            }
            defer { freeaddrinfo(info) }
            let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket", path: address.description, errno: errno) }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("bind", path: address.description, errno: code)
            }
            guard Glibc.listen(fd, backlog) == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("listen", path: address.description, errno: code)
            }
            return StreamSocket(adopting: fd, name: address.description)
        case .unix(let path):
            var info = stat()
            if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK { _ = unlink(path) }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket", path: path, errno: errno) }
            var address = unixAddress(path)
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard status == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("bind", path: path, errno: code)
            }
            _ = chmod(path, 0o600)
            guard Glibc.listen(fd, backlog) == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("listen", path: path, errno: code)
            }
            return StreamSocket(adopting: fd, name: "unix:\(path)")
        }
    }

    /// Connects to `address` (for clients and tests).
    public static func connect(_ address: Address) throws -> StreamSocket {
        switch address {
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_NUMERICHOST
            var info: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &info) == 0, let first = info else {
                throw SystemError("resolve", path: address.description, errno: EINVAL)
            }
            defer { freeaddrinfo(info) }
            let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket", path: address.description, errno: errno) }
            guard Glibc.connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("connect", path: address.description, errno: code)
            }
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            return StreamSocket(adopting: fd, name: address.description)
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket", path: path, errno: errno) }
            var address = unixAddress(path)
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard status == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError("connect", path: path, errno: code)
            }
            return StreamSocket(adopting: fd, name: "unix:\(path)")
        }
    }

    private static func unixAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// The port a TCP listening socket got (for port 0).
    public var localPort: UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard status == 0 else { return nil }
        if Int32(storage.ss_family) == AF_INET {
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        }
        if Int32(storage.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        }
        return nil
    }

    /// Accepts one connection.
    public func accept() throws -> StreamSocket {
        let fd = Syscalls.retrying { Glibc.accept(descriptor, nil, nil) }
        guard fd >= 0 else { throw SystemError("accept", path: name, errno: errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return StreamSocket(adopting: fd, name: name + " (connection)")
    }

    /// Reads what is there, up to `maximum` bytes; empty at end of stream.
    /// The buffer is not zero-filled first: only the bytes received are ever part of
    /// the array (zeroing 64 KiB per call was 70% of `serve`'s instructions per TPM
    /// command, docs/PERFORMANCE.md).
    public func receive(maximum: Int = 65536) throws -> [UInt8] {
        var n = 0
        let buffer = [UInt8](unsafeUninitializedCapacity: max(maximum, 0)) { raw, initialized in
            n = Syscalls.retryingSize { Glibc.recv(descriptor, raw.baseAddress, raw.count, 0) }
            initialized = max(n, 0)
        }
        guard n >= 0 else { throw SystemError("receive", path: name, errno: errno) }
        return buffer
    }

    /// Reads what is there, up to `maximum` bytes, into `buffer` from `offset` (no
    /// allocation). Returns the count; 0 at end of stream.
    public func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int {
        precondition(offset >= 0 && maximum >= 0 && offset + maximum <= buffer.count, "receive(into:) outside the buffer")
        let n = buffer.withUnsafeMutableBytes { raw in
            Syscalls.retryingSize { Glibc.recv(descriptor, raw.baseAddress! + offset, maximum, 0) }
        }
        guard n >= 0 else { throw SystemError("receive", path: name, errno: errno) }
        return n
    }

    /// What is there now, up to `maximum` bytes, without waiting: nil if nothing is,
    /// empty at end of stream.
    public func receiveIfReady(maximum: Int = 65536) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: maximum)
        let n = buffer.withUnsafeMutableBytes { raw in
            Syscalls.retryingSize { Glibc.recv(descriptor, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT)) }
        }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return nil }
        guard n >= 0 else { throw SystemError("receive", path: name, errno: errno) }
        buffer.removeSubrange(n...)
        return buffer
    }

    /// Makes a receive that waits longer than `seconds` for any byte, or a send that
    /// cannot hand over any byte for that long, fail with an error whose `isTimeout` is
    /// true. 0: wait forever (the default).
    public func setTimeout(seconds: Double) throws {
        precondition(seconds >= 0, "a negative timeout")
        var value = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            guard setsockopt(descriptor, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw SystemError("setsockopt timeout", path: name, errno: errno)
            }
        }
    }

    /// Reads what is there and a file descriptor passed with it (SCM_RIGHTS), if any.
    public func receiveWithDescriptor(maximum: Int = 65536) throws -> (bytes: [UInt8], descriptor: Int32?) {
        var buffer = [UInt8](repeating: 0, count: maximum)
        let controlLength = Int(cmsgSpace(MemoryLayout<Int32>.size))
        var control = [UInt8](repeating: 0, count: controlLength)
        var received: Int32?
        let n = buffer.withUnsafeMutableBytes { raw -> Int in
            control.withUnsafeMutableBytes { controlRaw -> Int in
                var vector = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> Int in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlRaw.baseAddress
                    message.msg_controllen = controlRaw.count
                    let count = Syscalls.retryingSize { recvmsg(descriptor, &message, Int32(MSG_CMSG_CLOEXEC)) }
                    if count >= 0, message.msg_controllen >= MemoryLayout<cmsghdr>.size {
                        let header = controlRaw.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                        if header.pointee.cmsg_level == SOL_SOCKET && header.pointee.cmsg_type == Int32(SCM_RIGHTS) {
                            let dataOffset = (MemoryLayout<cmsghdr>.size + 7) & ~7
                            received = controlRaw.load(fromByteOffset: dataOffset, as: Int32.self)
                        }
                    }
                    return count
                }
            }
        }
        guard n >= 0 else { throw SystemError("receive", path: name, errno: errno) }
        buffer.removeSubrange(n...)
        return (buffer, received)
    }

    private static func cmsgAlign(_ length: Int) -> Int { (length + 7) & ~7 }
    private func cmsgSpace(_ length: Int) -> Int { Self.cmsgAlign(MemoryLayout<cmsghdr>.size) + Self.cmsgAlign(length) }

    /// Writes all of `bytes`.
    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Syscalls.retryingSize { Glibc.send(descriptor, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL)) }
            }
            guard n > 0 else { throw SystemError("send", path: name, errno: errno) }
            sent += n
        }
    }

    /// Writes all of `bytes` within `timeout` milliseconds in total, however slowly the
    /// peer reads; throws an error with errno ETIMEDOUT when the time runs out (the
    /// connection is then unusable: part of the bytes may have gone).
    public func send(_ bytes: [UInt8], timeout: Int32) throws {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let limit = Int64(deadline.tv_sec) * 1000 + Int64(deadline.tv_nsec) / 1_000_000 + Int64(timeout)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Syscalls.retryingSize { Glibc.send(descriptor, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            }
            if n > 0 { sent += n; continue }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK else { throw SystemError("send", path: name, errno: n == 0 ? EPIPE : errno) }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let left = limit - (Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000)
            guard left > 0 else { throw SystemError("send (the peer did not read within \(timeout) ms)", path: name, errno: ETIMEDOUT) }
            var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
            _ = Glibc.poll(&entry, 1, Int32(min(left, Int64(Int32.max))))
        }
    }

    /// Waits until one of `sockets` is readable (or closed), or `timeout` milliseconds
    /// (-1: forever). Returns the indices of the ready ones.
    public static func poll(_ descriptors: [Int32], timeout: Int32) throws -> [Int] {
        var fds = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let n = fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t($0.count), timeout) }
        if n < 0 {
            if errno == EINTR { return [] }
            throw SystemError("poll", path: "sockets", errno: errno)
        }
        return fds.indices.filter { fds[$0].revents != 0 }
    }
}

extension Syscalls {
    static func retryingSize(_ body: () -> Int) -> Int {
        while true {
            let result = body()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }
}
