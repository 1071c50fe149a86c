internal import AsyncHTTPClient
import GuestVaultCore
import Foundation
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL
import Synchronization

/// A synchronous client of etcd's v3 API through its JSON gateway (`/v3/kv/...`,
/// `/v3/lease/...`), on async-http-client with one event loop of its own. The rest of
/// GuestVault is synchronous (threads, blocking sockets): each call sends one request
/// and waits for its answer with a deadline on the caller's thread, never on the event
/// loop. Endpoints are tried in turn when one does not answer; an endpoint that answers
/// is kept for the next call.
///
/// Every reply is hostile input: bodies are capped, numbers are checked, and a reply
/// that is not what etcd sends is a ``ClusterError`` (`clusterProtocol`).
public final class EtcdClient: Sendable {
    public struct TLS: Sendable, Equatable, Codable {
        /// PEM file of the CA that signed etcd's server certificates.
        public var caFile: String
        /// PEM client certificate and key, when etcd requires client certificates.
        public var certFile: String?
        public var keyFile: String?

        public init(caFile: String, certFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    /// Largest reply body accepted from etcd.
    static let maximumReplyBytes = 4 << 20

    public let endpoints: [String]
    /// How long one request may take on one endpoint before the next is tried.
    public let requestTimeout: Duration
    private let group: MultiThreadedEventLoopGroup
    private let http: HTTPClient
    private let preferred = Mutex(0)

    /// `endpoints` are base URLs (`http://127.0.0.1:2379`, `https://etcd-1:2379`).
    public init(endpoints: [String], tls: TLS? = nil, requestTimeout: Duration = .seconds(2)) throws {
        guard !endpoints.isEmpty else {
            throw ClusterError(.clusterConfiguration, "no etcd endpoint is configured: give at least one with --endpoints")
        }
        for endpoint in endpoints {
            guard let url = URL(string: endpoint), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
                throw ClusterError(.clusterConfiguration, "etcd endpoint '\(endpoint)' is not an http:// or https:// URL")
            }
            if scheme == "https" && tls == nil {
                throw ClusterError(.clusterConfiguration, "etcd endpoint '\(endpoint)' is https: give the CA file (--etcd-ca)")
            }
        }
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.requestTimeout = requestTimeout
        var tlsConfiguration: TLSConfiguration?
        if let tls {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(tls.caFile)
            do {
                if let certFile = tls.certFile, let keyFile = tls.keyFile {
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                }
            } catch {
                throw ClusterError(.clusterConfiguration, "cannot read the etcd client certificate \(tls.certFile ?? "")",
                                   underlying: error)
            }
            tlsConfiguration = configuration
        }
        let milliseconds = Int64(requestTimeout.components.seconds * 1000 + requestTimeout.components.attoseconds / 1_000_000_000_000_000)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        http = HTTPClient(
            eventLoopGroupProvider: .shared(group),
            configuration: HTTPClient.Configuration(
                tlsConfiguration: tlsConfiguration,
                timeout: .init(connect: .milliseconds(min(milliseconds, 1000)), read: .milliseconds(milliseconds))
            )
        )
    }

    deinit {
        try? http.syncShutdown()
        try? group.syncShutdownGracefully()
    }

    // MARK: Key-value

    /// Puts `value` at `key` (attached to `lease` unless 0); returns the new revision.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) throws -> Int64 {
        var body: [String: Any] = ["key": Self.base64(key), "value": Data(value).base64EncodedString()]
        if lease != 0 { body["lease"] = String(lease) }
        let reply = try call("/v3/kv/put", body)
        return try EtcdReply.header(of: reply).revision
    }

    /// The key's current value and revisions, or nil when it does not exist. Linearizable.
    public func get(_ key: String) throws -> EtcdKeyValue? {
        let reply = try call("/v3/kv/range", ["key": Self.base64(key)])
        return try EtcdReply.keyValues(of: reply).first
    }

    /// Every key that starts with `prefix`, in key order (at most `limit`).
    public func list(prefix: String, limit: Int = 10_000) throws -> [EtcdKeyValue] {
        let reply = try call("/v3/kv/range", ["key": Self.base64(prefix), "range_end": Self.base64(Self.prefixEnd(prefix)),
                                              "limit": String(limit)])
        return try EtcdReply.keyValues(of: reply)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    @discardableResult
    public func delete(_ key: String) throws -> Int64 {
        let reply = try call("/v3/kv/deleterange", ["key": Self.base64(key)])
        return try EtcdReply.int64(reply["deleted"], "deleted", default: 0)
    }

    /// One transaction: if every comparison holds, the `success` operations run, else
    /// the `failure` operations. All at one revision.
    public func transaction(if compare: [EtcdCompare], then success: [EtcdOperation],
                            else failure: [EtcdOperation] = []) throws -> EtcdTransactionResult {
        let reply = try call("/v3/kv/txn", [
            "compare": compare.map(\.json),
            "success": success.map(\.json),
            "failure": failure.map(\.json),
        ])
        return try EtcdTransactionResult(reply: reply)
    }

    // MARK: Leases

    /// Grants a lease of `ttl` seconds; returns its id and the TTL etcd granted.
    public func grantLease(ttl: Int64) throws -> (id: Int64, ttl: Int64) {
        let reply = try call("/v3/lease/grant", ["TTL": String(ttl)])
        let id = try EtcdReply.int64(reply["ID"], "ID")
        let granted = try EtcdReply.int64(reply["TTL"], "TTL", default: 0)
        guard id != 0, granted > 0 else {
            throw ClusterError(.clusterProtocol, "etcd granted no lease (\(EtcdReply.errorText(reply) ?? "no TTL"))")
        }
        return (id, granted)
    }

    /// Renews `lease` once; returns the TTL it has now, 0 when it has expired.
    public func keepAlive(lease: Int64) throws -> Int64 {
        let reply = try call("/v3/lease/keepalive", ["ID": String(lease)])
        guard let result = reply["result"] as? [String: Any] else {
            throw ClusterError(.clusterProtocol, "etcd's keep-alive reply for lease \(lease) has no result"
                               + (EtcdReply.errorText(reply).map { ": \($0)" } ?? ""))
        }
        return try EtcdReply.int64(result["TTL"], "TTL", default: 0)
    }

    /// Revokes `lease`: every key attached to it is deleted at once.
    public func revoke(lease: Int64) throws {
        _ = try call("/v3/lease/revoke", ["ID": String(lease)])
    }

    /// The status of the member at `endpoint` (leader, raft index), for `cluster status`.
    public func memberStatus(endpoint: String) throws -> [String: Any] {
        try send(endpoint: endpoint, path: "/v3/maintenance/status", body: [:])
    }

    // MARK: Transport

    private func call(_ path: String, _ body: [String: Any]) throws -> [String: Any] {
        let start = preferred.withLock { $0 }
        var failures: [String] = []
        var last: (any Error & Sendable)?
        for step in 0..<endpoints.count {
            let index = (start + step) % endpoints.count
            do {
                let reply = try send(endpoint: endpoints[index], path: path, body: body)
                if step != 0 { preferred.withLock { $0 = index } }
                return reply
            } catch let error as ClusterError where error.code == .clusterUnavailable {
                failures.append(endpoints[index])
                last = error
            }
        }
        throw ClusterError(.clusterUnavailable,
                           "no etcd endpoint answered \(path) (\(failures.joined(separator: ", "))): etcd is down or has no quorum",
                           underlying: last)
    }

    private func send(endpoint: String, path: String, body: [String: Any]) throws -> [String: Any] {
        let payload: Data
        do { payload = try JSONSerialization.data(withJSONObject: body) } catch {
            throw ClusterError(.clusterProtocol, "cannot encode the request to \(path)", underlying: error)
        }
        let request: HTTPClient.Request
        do {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            request = try HTTPClient.Request(url: endpoint + path, method: .POST, headers: headers, body: .bytes(payload))
        } catch {
            throw ClusterError(.clusterConfiguration, "etcd endpoint '\(endpoint)' is not a usable URL", underlying: error)
        }
        let seconds = requestTimeout.components.seconds
        let nanos = seconds * 1_000_000_000 + requestTimeout.components.attoseconds / 1_000_000_000
        let accumulator = ResponseAccumulator(request: request, maxBodySize: Self.maximumReplyBytes)
        let response: HTTPClient.Response
        do {
            response = try http.execute(request: request, delegate: accumulator,
                                        deadline: .now() + .nanoseconds(nanos)).futureResult.wait()
        } catch {
            throw ClusterError(.clusterUnavailable, "etcd at \(endpoint) did not answer \(path)", underlying: error)
        }
        let bytes = response.body.map { Array($0.readableBytesView) } ?? []
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: Data(bytes)) } catch {
            throw ClusterError(.clusterProtocol, "etcd at \(endpoint) sent a reply to \(path) that is not JSON (HTTP \(response.status.code))",
                               underlying: error)
        }
        guard let reply = object as? [String: Any] else {
            throw ClusterError(.clusterProtocol, "etcd at \(endpoint) sent a reply to \(path) that is not a JSON object")
        }
        guard response.status == .ok else {
            let text = EtcdReply.errorText(reply) ?? "HTTP \(response.status.code)"
            // No leader, timeouts and an unreachable quorum are etcd being unavailable,
            // which the next endpoint may not be.
            let code = EtcdReply.int64Lenient(reply["code"])
            if code == 14 || code == 4 || text.contains("no leader") || text.contains("timed out") || text.contains("unavailable") {
                throw ClusterError(.clusterUnavailable, "etcd at \(endpoint) refused \(path): \(text)")
            }
            throw ClusterError(.clusterProtocol, "etcd at \(endpoint) refused \(path): \(text)")
        }
        return reply
    }

    static func base64(_ key: String) -> String { Data(key.utf8).base64EncodedString() }

    /// The smallest key greater than every key that starts with `prefix`.
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0x7F { bytes[bytes.count - 1] = last + 1; return String(decoding: bytes, as: UTF8.self) }
            bytes.removeLast()
        }
        return "\0"
    }
}
