import Foundation
public import GuestVaultCore
import Synchronization

/// One member's ownership of one VM in the cluster: an etcd lease that this process
/// keeps alive, the VM's owner key attached to it, and the fencing token (the etcd
/// revision at which the owner key was made). While it holds, this member is the only
/// one that can make a commit of the VM visible (``authorize(generation:)``).
///
/// Fail-stop: when the lease cannot be renewed, ownership is given up *before* the lease
/// can expire in etcd (`ttl - safety` after the last renewal was sent), `onLost` is
/// called, and every later ``authorize(generation:)`` throws `clusterFenced`. A zombie
/// (a process paused past its lease and resumed) is refused by etcd itself: the commit
/// transaction is conditioned on the owner key still being the one this process made.
public final class VMOwnership: Sendable {
    public let vm: String
    public let member: String
    public let lease: Int64
    /// The fencing token: the etcd revision at which this member took the VM.
    public let token: Int64
    public let ttl: Int64
    /// What etcd recorded for the VM when this member took it (nil: never committed).
    public let recordedAtAcquire: RecordedGeneration?

    private let client: EtcdClient
    private let keys: ClusterKeys
    private let onLost: @Sendable (ClusterError) -> Void
    private let state: Mutex<State>
    private let wakeup = NSCondition()

    private struct State {
        var generationRevision: Int64
        var recorded: RecordedGeneration?
        var validUntil: ContinuousClock.Instant
        var lost: ClusterError?
        var uncertain: UInt64?
        var stopping = false
        var renewals = 0
    }

    private init(client: EtcdClient, keys: ClusterKeys, vm: String, member: String, lease: Int64, ttl: Int64, token: Int64,
                 recorded: EtcdKeyValue?, validUntil: ContinuousClock.Instant, onLost: @escaping @Sendable (ClusterError) -> Void) throws {
        self.client = client
        self.keys = keys
        self.vm = vm
        self.member = member
        self.lease = lease
        self.ttl = ttl
        self.token = token
        self.onLost = onLost
        let record = try recorded.map { try RecordedGeneration.decode($0.value, vm: vm) }
        recordedAtAcquire = record
        state = Mutex(State(generationRevision: recorded?.modRevision ?? 0, recorded: record, validUntil: validUntil))
    }

    /// Takes `vm` for `member` with a lease of `ttl` seconds. When another member owns it
    /// and `wait` is given, waits up to `wait` for its lease to end (failover); otherwise
    /// throws `clusterOwnedElsewhere`. The keep-alive thread starts at once.
    public static func acquire(
        client: EtcdClient, keys: ClusterKeys, vm: String, member: String, ttl: Int64 = 10, wait: Duration? = nil,
        onLost: @escaping @Sendable (ClusterError) -> Void = { _ in }
    ) throws -> VMOwnership {
        guard ttl >= 2, ttl <= 3600 else {
            throw ClusterError(.clusterConfiguration, "lease TTL \(ttl) s is out of range (2-3600 s)")
        }
        let vm = vm.lowercased()
        let clock = ContinuousClock()
        let giveUp = wait.map { clock.now + $0 }
        let ownerKey = keys.owner(vm: vm)
        let generationKey = keys.generation(vm: vm)
        while true {
            let sent = clock.now
            let (lease, granted) = try client.grantLease(ttl: ttl)
            let result: EtcdTransactionResult
            do {
                result = try client.transaction(
                    if: [EtcdCompare(ownerKey, .createRevision(0))],
                    then: [.put(ownerKey, Array(member.utf8), lease: lease), .get(generationKey)],
                    else: [.get(ownerKey)])
            } catch {
                try? client.revoke(lease: lease)
                throw error
            }
            if result.succeeded {
                let ownership = try VMOwnership(client: client, keys: keys, vm: vm, member: member, lease: lease, ttl: granted,
                                                token: result.revision, recorded: result.ranges.first ?? nil,
                                                validUntil: sent + .seconds(granted), onLost: onLost)
                ownership.startKeepAlive()
                return ownership
            }
            try? client.revoke(lease: lease)
            let holder = (result.ranges.first ?? nil).map { String(decoding: $0.value, as: UTF8.self) } ?? "another member"
            guard let giveUp, clock.now < giveUp else {
                throw ClusterError(.clusterOwnedElsewhere,
                                   "VM \(vm) is owned by member '\(holder.prefix(64))' of cluster \(keys.cluster); it fails over here only when that member's lease ends")
            }
            usleep(200_000)
        }
    }

    /// Whether this member still owns the VM as far as it knows (not lost, lease renewed).
    public var isOwner: Bool { state.withLock { $0.lost == nil && ContinuousClock().now < $0.validUntil } }

    /// Why ownership was lost, nil while it holds.
    public var lostReason: ClusterError? { state.withLock { $0.lost } }

    /// The generation etcd has recorded for this VM, as far as this owner knows.
    public var recorded: RecordedGeneration? { state.withLock { $0.recorded } }

    /// Successful lease renewals so far.
    public var renewals: Int { state.withLock { $0.renewals } }

    /// The commit point: makes container generation `generation` of the VM visible in
    /// the cluster, in one etcd transaction that holds only while this member's owner key
    /// (fencing token) is still the VM's owner key and nobody recorded another
    /// generation since. Call it after the container's commit is durable and before the
    /// commit is reported as done. Throws `clusterFenced` when ownership is gone (the
    /// commit is not visible, and the caller must stop), `clusterUnavailable` when etcd
    /// did not answer (the commit's fate is unknown: the next call finds it out).
    public func authorize(generation: UInt64, file: String? = nil, logEnd: Int64? = nil) throws {
        let snapshot = try state.withLock { state -> State in
            if let lost = state.lost { throw lost }
            return state
        }
        var expectedRevision = snapshot.generationRevision
        if let pending = snapshot.uncertain {
            // The last transaction's answer was lost: read what etcd has.
            let current = try client.get(keys.generation(vm: vm))
            let record = try current.map { try RecordedGeneration.decode($0.value, vm: vm) }
            if let current, let record, record.token == token, record.generation == pending {
                expectedRevision = current.modRevision
                state.withLock { $0.generationRevision = current.modRevision; $0.recorded = record; $0.uncertain = nil }
            }
        }
        if let recorded = snapshot.recorded, generation <= recorded.generation {
            throw ClusterError(.clusterRollback, "generation \(generation) of VM \(vm) is not after generation \(recorded.generation), which the cluster recorded")
        }
        let record = RecordedGeneration(generation: generation, token: token, member: member, file: file, logEnd: logEnd)
        for attempt in 0..<2 {
            let result: EtcdTransactionResult
            do {
                result = try client.transaction(
                    if: [EtcdCompare(keys.owner(vm: vm), .createRevision(token)),
                         EtcdCompare(keys.generation(vm: vm), .modRevision(expectedRevision))],
                    then: [.put(keys.generation(vm: vm), try record.encoded())],
                    else: [.get(keys.owner(vm: vm)), .get(keys.generation(vm: vm))])
            } catch {
                state.withLock { $0.uncertain = generation }
                throw error
            }
            if result.succeeded {
                state.withLock { $0.generationRevision = result.revision; $0.recorded = record; $0.uncertain = nil }
                return
            }
            let holder = result.ranges.first ?? nil
            let current = result.ranges.count > 1 ? result.ranges[1] : nil
            // Still the owner, and the record that moved is this owner's own (a commit
            // whose answer was lost and that etcd applied later): catch up, try again.
            if attempt == 0, holder?.createRevision == token, let current,
               let mine = try? RecordedGeneration.decode(current.value, vm: vm), mine.token == token, mine.generation < generation {
                expectedRevision = current.modRevision
                state.withLock { $0.generationRevision = current.modRevision; $0.recorded = mine; $0.uncertain = nil }
                continue
            }
            let why = holder == nil ? "its lease ended" : holder!.createRevision == token
                ? "another generation was recorded meanwhile" : "member '\(String(decoding: holder!.value, as: UTF8.self).prefix(64))' took it"
            let error = ClusterError(.clusterFenced,
                                     "member '\(member)' no longer owns VM \(vm) (\(why)): generation \(generation) was not made visible")
            lose(error)
            throw error
        }
        throw ClusterError(.clusterFenced, "member '\(member)' could not record generation \(generation) of VM \(vm)")
    }

    /// Gives the VM up: stops renewing and revokes the lease, so another member can take
    /// it at once.
    public func release() {
        let wasStopping = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return state.stopping
        }
        wakeup.lock(); wakeup.broadcast(); wakeup.unlock()
        if !wasStopping { try? client.revoke(lease: lease) }
        lose(ClusterError(.clusterFenced, "member '\(member)' released VM \(vm)"), notify: false)
    }

    deinit { state.withLock { $0.stopping = true } }

    // MARK: Keep-alive

    private func lose(_ error: ClusterError, notify: Bool = true) {
        let first = state.withLock { state -> Bool in
            guard state.lost == nil else { return false }
            state.lost = error
            return true
        }
        if first && notify { onLost(error) }
    }

    private func startKeepAlive() {
        let thread = Thread { [weak self] in self?.keepAliveLoop() }
        thread.name = "guestvault-lease-\(vm.prefix(8))"
        thread.start()
    }

    /// Renews every ttl/3 seconds; on failure retries every 250 ms; gives the VM up when
    /// the lease might end within the safety margin (a third of the TTL, at least 1 s).
    private func keepAliveLoop() {
        let clock = ContinuousClock()
        let interval = Duration.milliseconds(ttl * 1000 / 3)
        let safety = Duration.milliseconds(max(1000, ttl * 1000 / 3))
        var next = clock.now + interval
        while true {
            let (stopping, lost, validUntil) = state.withLock { ($0.stopping, $0.lost, $0.validUntil) }
            if stopping || lost != nil { return }
            if clock.now >= validUntil - safety {
                lose(ClusterError(.clusterFenced,
                                  "member '\(member)' could not renew its lease on VM \(vm) in time: it stopped the VM's TPM before the lease could end"))
                return
            }
            let wait = min(next, validUntil - safety) - clock.now
            if wait > .zero {
                wakeup.lock()
                _ = wakeup.wait(until: Date(timeIntervalSinceNow: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18))
                wakeup.unlock()
                continue
            }
            let sent = clock.now
            do {
                let remaining = try client.keepAlive(lease: lease)
                guard remaining > 0 else {
                    lose(ClusterError(.clusterFenced, "member '\(member)' lost VM \(vm): its lease ended in etcd"))
                    return
                }
                state.withLock { $0.validUntil = sent + .seconds(remaining); $0.renewals += 1 }
                next = sent + interval
            } catch {
                next = clock.now + .milliseconds(250)
            }
        }
    }
}
