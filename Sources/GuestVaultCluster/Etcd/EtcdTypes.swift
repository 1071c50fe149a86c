import Foundation
import GuestVaultCore

/// One key in etcd with its revisions.
public struct EtcdKeyValue: Sendable, Equatable {
    public let key: String
    public let value: [UInt8]
    /// The revision that created the key (changes when it is deleted and made again).
    public let createRevision: Int64
    /// The revision of the last change.
    public let modRevision: Int64
    public let version: Int64
    /// The lease the key is attached to, 0 when none.
    public let lease: Int64
}

/// The header etcd puts on every reply.
public struct EtcdHeader: Sendable, Equatable {
    public let revision: Int64
    public let raftTerm: Int64
}

/// A comparison of a transaction.
public struct EtcdCompare: Sendable {
    public enum Target: Sendable {
        case createRevision(Int64)
        case modRevision(Int64)
        case version(Int64)
        case value([UInt8])
        case lease(Int64)
    }

    public enum Result: String, Sendable { case equal = "EQUAL", greater = "GREATER", less = "LESS", notEqual = "NOT_EQUAL" }

    public let key: String
    public let target: Target
    public let result: Result

    public init(_ key: String, _ target: Target, _ result: Result = .equal) {
        self.key = key
        self.target = target
        self.result = result
    }

    var json: [String: Any] {
        var object: [String: Any] = ["key": EtcdClient.base64(key), "result": result.rawValue]
        switch target {
        case .createRevision(let value): object["target"] = "CREATE"; object["create_revision"] = String(value)
        case .modRevision(let value): object["target"] = "MOD"; object["mod_revision"] = String(value)
        case .version(let value): object["target"] = "VERSION"; object["version"] = String(value)
        case .value(let value): object["target"] = "VALUE"; object["value"] = Data(value).base64EncodedString()
        case .lease(let value): object["target"] = "LEASE"; object["lease"] = String(value)
        }
        return object
    }
}

/// An operation of a transaction.
public enum EtcdOperation: Sendable {
    case put(String, [UInt8], lease: Int64 = 0)
    case get(String)
    case delete(String)

    var json: [String: Any] {
        switch self {
        case .put(let key, let value, let lease):
            var put: [String: Any] = ["key": EtcdClient.base64(key), "value": Data(value).base64EncodedString()]
            if lease != 0 { put["lease"] = String(lease) }
            return ["request_put": put]
        case .get(let key):
            return ["request_range": ["key": EtcdClient.base64(key)]]
        case .delete(let key):
            return ["request_delete_range": ["key": EtcdClient.base64(key)]]
        }
    }
}

/// What a transaction did: whether the comparisons held, the revision it ran at, and
/// the keys its range operations read (in order, nil for a missing key).
public struct EtcdTransactionResult: Sendable {
    public let succeeded: Bool
    public let revision: Int64
    public let ranges: [EtcdKeyValue?]

    init(reply: [String: Any]) throws {
        revision = try EtcdReply.header(of: reply).revision
        switch reply["succeeded"] {
        case nil: succeeded = false
        case let flag as Bool: succeeded = flag
        default: throw ClusterError(.clusterProtocol, "etcd's transaction reply has a 'succeeded' that is not a boolean")
        }
        var ranges: [EtcdKeyValue?] = []
        if let responses = reply["responses"] {
            guard let list = responses as? [[String: Any]], list.count <= 64 else {
                throw ClusterError(.clusterProtocol, "etcd's transaction reply has malformed responses")
            }
            for response in list {
                if let range = response["response_range"] as? [String: Any] {
                    ranges.append(try EtcdReply.keyValues(of: range).first)
                }
            }
        }
        self.ranges = ranges
    }
}

/// Readers of etcd's JSON replies (proto3 JSON: 64-bit numbers as strings, zero values
/// and empty fields left out, bytes in base64). Every field is checked.
enum EtcdReply {
    static func header(of reply: [String: Any]) throws -> EtcdHeader {
        guard let header = reply["header"] as? [String: Any] else {
            throw ClusterError(.clusterProtocol, "etcd's reply has no header" + (errorText(reply).map { ": \($0)" } ?? ""))
        }
        return EtcdHeader(revision: try int64(header["revision"], "revision", default: 0),
                          raftTerm: try int64(header["raft_term"], "raft_term", default: 0))
    }

    static func keyValues(of reply: [String: Any]) throws -> [EtcdKeyValue] {
        guard let kvs = reply["kvs"] else { return [] }
        guard let list = kvs as? [[String: Any]], list.count <= 100_000 else {
            throw ClusterError(.clusterProtocol, "etcd's range reply has malformed 'kvs'")
        }
        return try list.map { item in
            guard let key = try bytes(item["key"], "key"), let text = String(validating: key, as: UTF8.self) else {
                throw ClusterError(.clusterProtocol, "etcd's range reply has a key that is missing or not UTF-8")
            }
            return EtcdKeyValue(key: text, value: try bytes(item["value"], "value") ?? [],
                                createRevision: try int64(item["create_revision"], "create_revision", default: 0),
                                modRevision: try int64(item["mod_revision"], "mod_revision", default: 0),
                                version: try int64(item["version"], "version", default: 0),
                                lease: try int64(item["lease"], "lease", default: 0))
        }
    }

    static func int64(_ value: Any?, _ field: String, default fallback: Int64? = nil) throws -> Int64 {
        switch value {
        case nil:
            if let fallback { return fallback }
        case let text as String:
            if let number = Int64(text) { return number }
        case let number as NSNumber:
            if let exact = Int64(exactly: number.doubleValue) { return exact }
        default:
            break
        }
        throw ClusterError(.clusterProtocol, "etcd's reply has a '\(field)' that is missing or not a 64-bit integer")
    }

    static func int64Lenient(_ value: Any?) -> Int64? { try? int64(value, "code") }

    static func bytes(_ value: Any?, _ field: String) throws -> [UInt8]? {
        guard let value else { return nil }
        guard let text = value as? String, let data = Data(base64Encoded: text) else {
            throw ClusterError(.clusterProtocol, "etcd's reply has a '\(field)' that is not base64")
        }
        return Array(data)
    }

    static func errorText(_ reply: [String: Any]) -> String? {
        if let error = reply["error"] as? [String: Any] { return (error["message"] as? String).map { String($0.prefix(200)) } }
        return ((reply["message"] ?? reply["error"]) as? String).map { String($0.prefix(200)) }
    }
}
