import Dispatch
import GuestVaultCore
import GuestVaultCrypto
import Logging

/// GET_STATEBLOB and SET_STATEBLOB: the one place where state blobs leave and enter the
/// server (QEMU's migration). A blob leaves sealed under the container's migration key
/// (docs/MIGRATION-BLOB.md), or encrypted with swtpm's migration key when one is given,
/// or in plaintext only with `--allow-plaintext-migration`; a blob enters only if it
/// opens under one of the keys this server holds (plaintext only when allowed). Blobs
/// that enter are held until CMD_INIT and committed together.
extension TPMServer {
    /// GET_STATEBLOB. As swtpm: the permanent and save states come from storage (every
    /// NV change is already committed there); the volatile state is stored first, handed
    /// out, and then removed so that it is not resumed a second time here.
    func getStateBlob(_ engine: TPMEngine, type: PTMBlobType, flags: PTMStateFlags, offset: UInt32) throws -> ControlResponse {
        guard let blob = Self.blob(type) else { return .result(.badParameter) }
        // After a failed NV commit, the TPM's memory is not what storage holds (8.4).
        guard !nvFailed else { return .result(.fail) }
        try ensureWriterLock(retries: 0)
        if blob == .volatile { try engine.storeVolatile() }
        let stored = try storage.load(blob)
        if blob == .volatile { try storage.delete(.volatile) }
        if blob == .saveState && configuration.migration.releaseLockOutgoing { releaseLockAfterReply = true }
        guard let state = stored, !state.isEmpty else {
            return .stateBlob(result: .retry, flags: [], data: [])
        }
        let (envelope, encrypted) = try sealOutgoing(state, blob)
        return .stateBlob(result: .success, flags: encrypted ? [.encrypted] : [], blob: envelope, offset: offset)
    }

    /// The blob as it leaves: swtpm's migration encryption, plaintext, or sealed.
    func sealOutgoing(_ state: [UInt8], _ blob: TPMStateBlob) throws -> (bytes: [UInt8], encrypted: Bool) {
        if let migrationKey {
            // swtpm reports PTM_STATE_FLAG_ENCRYPTED only for its state-file key, never
            // for the migration key; QEMU hands the flag back on SET_STATEBLOB, where
            // swtpm would then look for a state-file key. So: flags 0, as swtpm.
            return (try SwtpmStateFile.encodeBlob(state, key: nil, migrationKey: migrationKey), false)
        }
        if configuration.migration.allowPlaintext {
            logger.warning("GET_STATEBLOB: the \(blob) state leaves in plaintext (--allow-plaintext-migration)")
            return (try SwtpmStateFile.encodeBlob(state, key: nil), false)
        }
        guard let host = migrationHost else {
            throw MigrationBlobError(.migrationBlobNoKey, blob: blob,
                                     "there is no key to seal the blob with: this TPM has no container; give --migration-key, or --allow-plaintext-migration")
        }
        // A new set starts with the permanent blob (QEMU's order), or when a blob of the
        // current set is asked for again.
        if blob == .permanent || outgoingSet == nil || outgoingSet!.handedOut.contains(blob) {
            outgoingSet = OutgoingSet(id: try SecureRandom.bytes(count: 16), generation: try host.currentGeneration(), handedOut: [])
        }
        outgoingSet!.handedOut.insert(blob)
        let binding = SealedMigrationBlob.Binding(vm: host.migrationVM, containerID: host.migrationContainerID, blob: blob,
                                                  generation: outgoingSet!.generation, blobSetID: outgoingSet!.id)
        return (try SealedMigrationBlob.seal(state, binding: binding, rootKey: try host.migrationRootKey()), true)
    }

    /// SET_STATEBLOB, only while the TPM is stopped. An empty blob deletes that state. A
    /// blob that does not open, belongs elsewhere, or is older than the container is
    /// refused, and the set it came with is dropped: the TPM stays stopped and the
    /// container unchanged.
    func setStateBlob(type: PTMBlobType, flags: PTMStateFlags, bytes: [UInt8]) throws -> ControlResponse {
        guard engine == nil else { return .result(.badOrdinal) }
        guard let blob = Self.blob(type) else { return .result(.badParameter) }
        var set = incomingSet ?? IncomingSet()
        do {
            if bytes.isEmpty {
                set.blobs[blob] = nil
                set.deleting.insert(blob)
            } else {
                let payload = try openIncoming(bytes, blob: blob, set: &set)
                set.deleting.remove(blob)
                set.blobs[blob] = payload
            }
        } catch {
            incomingSet = set
            dropIncomingSet(reason: "SET_STATEBLOB \(blob) was refused")
            let refused = MigrationBlobError(.migrationBlobRefused, blob: blob,
                                             "SET_STATEBLOB refused the \(blob) blob; the TPM stays stopped and the container unchanged",
                                             underlying: error)
            logger.error("\(refused.message)", metadata: ["error": "\(ErrorChain.message(of: error))"])
            if ErrorChain.contains(.keyRequired, in: error) { return .result(.keyNotFound) }
            return .result(.fail)
        }
        incomingSet = set
        return .result(.success)
    }

    /// Opens one incoming blob by its kind: sealed (container key), swtpm's migration
    /// encryption (swtpm key), or plaintext (only when allowed).
    func openIncoming(_ bytes: [UInt8], blob: TPMStateBlob, set: inout IncomingSet) throws -> [UInt8] {
        let name = "SET_STATEBLOB \(blob)"
        if SealedMigrationBlob.isSealed(bytes) {
            guard let host = migrationHost else {
                throw MigrationBlobError(.migrationBlobNoKey, blob: blob,
                                         "the blob is sealed under a GuestVault container's migration key, and this TPM has no container")
            }
            let claimed = try SealedMigrationBlob.peek(bytes, file: name)
            guard claimed.blob == blob else {
                throw MigrationBlobError(.migrationBlobForeign, blob: blob, "the blob is sealed as the \(claimed.blob) state, not the \(blob) state")
            }
            guard claimed.vm == host.migrationVM, claimed.containerID == host.migrationContainerID else {
                throw MigrationBlobError(.migrationBlobForeign, blob: blob,
                                         "the blob belongs to VM \(SWTPMText.hexString(claimed.vm)) container \(SWTPMText.hexString(claimed.containerID)), not to this VM \(SWTPMText.hexString(host.migrationVM)) container \(SWTPMText.hexString(host.migrationContainerID))")
            }
            let opened = try SealedMigrationBlob.open(bytes, rootKey: try host.migrationRootKey(), file: name)
            if let earlier = set.sealed, earlier.blobSetID != opened.binding.blobSetID || earlier.generation != opened.binding.generation {
                throw MigrationBlobError(.migrationBlobForeign, blob: blob,
                                         "the blob belongs to another blob set (generation \(opened.binding.generation)) than the blobs before it (generation \(earlier.generation)): blobs of two migrations are mixed")
            }
            // The state arrives: take the writer lock (incoming), then judge its age
            // against the container as it is now.
            if !host.holdsWriterLock {
                try host.acquireWriterLock(retries: 0)
                set.tookLock = true
                logger.info("took the container's writer lock: the migrated state arrived")
            }
            if let refusal = try host.migrationFloor().refusal(of: opened.binding.generation) {
                throw MigrationBlobError(.migrationBlobStale, blob: blob, refusal)
            }
            set.sealed = opened.binding
            return opened.payload
        }
        let header = try SwtpmStateFile.parseHeader(bytes, file: name)
        if header.flags.contains(.migrationEncrypted) {
            guard let migrationKey else {
                throw SwtpmFormatError(.keyRequired, file: name, offset: 4,
                                       "the blob is encrypted with swtpm's migration key (flag 0x02), and this server has none; start it with --migration-key holding the same key as the source")
            }
            try ensureWriterLock(retries: 0, set: &set)
            return try SwtpmStateFile.decode(bytes, file: name, key: nil, migrationKey: migrationKey, form: .controlChannelBlob).payload
        }
        guard configuration.migration.allowPlaintext else {
            throw MigrationBlobError(.migrationBlobPlaintext, blob: blob,
                                     "the blob is plaintext (its source has no migration key); plaintext state is accepted only with --allow-plaintext-migration")
        }
        logger.warning("SET_STATEBLOB: the \(blob) state arrived in plaintext (--allow-plaintext-migration)")
        try ensureWriterLock(retries: 0, set: &set)
        return try SwtpmStateFile.decode(bytes, file: name, key: nil, form: .controlChannelBlob).payload
    }

    private func ensureWriterLock(retries: UInt32, set: inout IncomingSet) throws {
        guard let host = migrationHost, !host.holdsWriterLock else { return }
        try host.acquireWriterLock(retries: retries)
        set.tookLock = true
    }

    /// Takes the container's writer lock if this process does not hold it (incoming, or
    /// after the hand-off): before the TPM writes anything.
    func ensureWriterLock(retries: UInt32) throws {
        guard let host = migrationHost, !host.holdsWriterLock else { return }
        try host.acquireWriterLock(retries: retries)
        logger.info("took the container's writer lock")
    }

    /// Commits the blobs SET_STATEBLOB accepted (CMD_INIT), in one container commit.
    func commitIncomingSet() throws {
        guard let set = incomingSet else { return }
        incomingSet = nil
        var deleting = set.deleting
        if set.sealed != nil {
            // A sealed set is the whole TPM: what it did not bring is not kept.
            for blob in TPMStateBlob.allCases where set.blobs[blob] == nil { deleting.insert(blob) }
        }
        if let host = migrationHost {
            try host.commitMigratedState(set.blobs, deleting: deleting, acceptedSet: set.sealed)
        } else {
            for (blob, bytes) in set.blobs { try storage.store(blob, bytes) }
            for blob in deleting { try storage.delete(blob) }
        }
        logger.info("committed the migrated TPM state (\(set.blobs.keys.map(\.rawValue).sorted().joined(separator: ", ")))")
    }

    /// Forgets the blobs accepted so far (a refused blob, or SHUTDOWN before INIT), and
    /// gives back the writer lock if they took it.
    func dropIncomingSet(reason: String) {
        guard let set = incomingSet else { return }
        incomingSet = nil
        if set.tookLock, let host = migrationHost {
            do {
                try host.releaseWriterLock()
            } catch {
                logger.error("could not give the container's writer lock back", metadata: ["error": "\(ErrorChain.message(of: error))"])
            }
        }
        if !set.blobs.isEmpty { logger.warning("dropped the incoming TPM state: \(reason)") }
    }

    /// release-lock-outgoing: after the last blob went out.
    func releaseWriterLockAfterHandOff() {
        guard let host = migrationHost, host.holdsWriterLock else { return }
        do {
            try host.releaseWriterLock()
            logger.info("released the container's writer lock: QEMU took the outgoing state (release-lock-outgoing)")
        } catch {
            logger.error("could not release the container's writer lock", metadata: ["error": "\(ErrorChain.message(of: error))"])
        }
    }

    /// LOCK_STORAGE (swtpm 0.8): take the writer lock, retrying `retries` times 10 ms apart.
    func lockStorage(retries: UInt32) -> ControlResponse {
        do {
            try ensureWriterLock(retries: retries)
            return .result(.success)
        } catch {
            logger.error("LOCK_STORAGE: could not take the container's writer lock", metadata: ["error": "\(ErrorChain.message(of: error))"])
            return .result(.fail)
        }
    }

    static func blob(_ type: PTMBlobType) -> TPMStateBlob? {
        switch type {
        case .permanent: .permanent
        case .volatile: .volatile
        case .savestate: .saveState
        default: nil
        }
    }
}
