import GuestVaultCore
public import GuestVaultCrypto
import GuestVaultSystem
import Synchronization

/// The PKCS#11 vault's root key: a secret key object on a token (a real HSM in
/// production, SoftHSM2 in tests) that never leaves it. Each derivation is one
/// HMAC-SHA256 computed by the token (CKM_SHA256_HMAC), so the blocks equal the file
/// backend's for the same root key.
///
/// The key object is a token-resident, private generic secret with CKA_SENSITIVE true
/// and CKA_EXTRACTABLE false; a found key that is extractable or not sensitive is
/// refused. The user PIN comes from a file of mode 0600 and is kept (zeroed on
/// release) so a session the token drops can be opened and logged in again.
public final class PKCS11RootKey: RootKeyBackend {
    public let kind = "pkcs11"
    /// "token LABEL (module PATH)".
    public let location: String
    /// The PKCS#11 module's path, as given.
    public let modulePath: String
    /// The token's label.
    public let tokenLabel: String
    /// The root key object's CKA_LABEL.
    public var keyLabel: String { target.keyLabel }

    private let target: Target
    private let pin: SecretBytes
    /// The session and the key handle in it. A session is one thread at a time.
    private let connection: Mutex<Connection>

    static let pinFileLimit = 4096
    static let rootKeyByteCount = 32

    private init(target: Target, pin: SecretBytes, connection: consuming Connection) {
        self.target = target
        self.location = target.location
        self.modulePath = target.module
        self.tokenLabel = target.tokenLabel
        self.pin = pin
        self.connection = Mutex(connection)
    }

    // MARK: Opening

    /// Opens the root key labelled `keyLabel` on the token labelled `tokenLabel`, logging
    /// in with the user PIN in `pinFile`. With `createIfMissing`, a missing key is
    /// generated inside the token (32 bytes, CKM_GENERIC_SECRET_KEY_GEN).
    ///
    /// Throws ``VaultError`` naming the token or the PIN file: `.moduleUnavailable`,
    /// `.tokenNotFound`, `.wrongPIN`, `.insecurePermissions` (a PIN file others can read,
    /// or an extractable key), `.notFound` (no such key and not creating), `.tokenFailure`.
    public static func open(
        module: String, tokenLabel: String, pinFile: String, keyLabel: String, createIfMissing: Bool
    ) throws -> PKCS11RootKey {
        let target = try Target(module: module, tokenLabel: tokenLabel, keyLabel: keyLabel, pinFile: pinFile)
        let pin = try readPIN(from: pinFile)
        let connection = try connect(target, pin: pin, provision: createIfMissing ? .generateIfMissing : .existing)
        return PKCS11RootKey(target: target, pin: pin, connection: connection)
    }

    /// Stores a given 32-byte root key on the token as a sensitive, non-extractable
    /// object, so a vault can be moved onto a token and tests can prove the two backends
    /// agree. Refuses (`.alreadyExists`) if a key with that label is already there.
    public static func importRootKey(
        _ key: SecretBytes, module: String, tokenLabel: String, pinFile: String, keyLabel: String
    ) throws -> PKCS11RootKey {
        let target = try Target(module: module, tokenLabel: tokenLabel, keyLabel: keyLabel, pinFile: pinFile)
        guard key.count == rootKeyByteCount else {
            throw VaultError(.invalidArgument, subject: target.location,
                             reason: "a root key is \(rootKeyByteCount) bytes, not \(key.count)")
        }
        let pin = try readPIN(from: pinFile)
        let connection = try connect(target, pin: pin, provision: .importKey(key))
        return PKCS11RootKey(target: target, pin: pin, connection: connection)
    }

    // MARK: Deriving

    public func deriveBlock(label: [UInt8], context info: [UInt8]) throws -> SecretBytes {
        let input = sp800108SingleBlockInput(label: label, context: info)
        return try withConnection("computing HMAC-SHA256 in the token") { session, key in
            try session.hmacSHA256(key: key, message: input)
        }
    }

    /// Runs `body` on the session, one thread at a time. If the token dropped the
    /// session, the login or the object handles, connects again and retries once.
    private func withConnection<R: Sendable>(
        _ step: String, _ body: (borrowing PKCS11Session, PKCS11Object) throws -> R
    ) throws -> R {
        try connection.withLock { connection in
            do {
                return try body(connection.session, connection.key)
            } catch let error as PKCS11Error where error.suggestsReconnecting {
                if error.isSessionGone { connection.session.forgetHandle() }
                connection = try PKCS11RootKey.connect(target, pin: pin, provision: .existing)
                do {
                    return try body(connection.session, connection.key)
                } catch {
                    throw target.failure(error, step)
                }
            } catch {
                throw target.failure(error, step)
            }
        }
    }

    // MARK: Diagnostics (tests)

    /// What the token says about the root key object.
    package func keyAttributes() throws -> PKCS11KeyAttributes {
        try withConnection("reading the root key's attributes") { session, key in try session.attributes(of: key) }
    }

    /// Asks the token for the root key's CKA_VALUE; it must refuse.
    package func keyValueReadOutcome() throws -> PKCS11ValueReadOutcome {
        try withConnection("asking for the root key's value") { session, key in try session.valueReadOutcome(of: key) }
    }

    /// Closes every session this process has on the token, as a token reset would.
    package func closeAllTokenSessions() throws {
        try connection.withLock { connection in
            do { try connection.session.closeAllSessionsOnSlot() } catch {
                throw target.failure(error, "closing the token's sessions")
            }
        }
    }

    /// Stores `key` under `keyLabel` as an extractable, non-sensitive secret key: what a
    /// careless import leaves behind, so tests can prove `open` refuses it.
    package static func storeExtractableKeyForTesting(
        _ key: SecretBytes, module: String, tokenLabel: String, pinFile: String, keyLabel: String
    ) throws {
        let target = try Target(module: module, tokenLabel: tokenLabel, keyLabel: keyLabel, pinFile: pinFile)
        _ = try connect(target, pin: try readPIN(from: pinFile), provision: .importExtractable(key))
    }

    // MARK: Connecting

    private enum Provision {
        /// Use the key that is there.
        case existing
        /// Use the key that is there, or generate one.
        case generateIfMissing
        /// Store this key; refuse if the label is taken.
        case importKey(SecretBytes)
        /// Store this key extractable and not sensitive, and do not check it (tests).
        case importExtractable(SecretBytes)
    }

    private struct Connection: ~Copyable {
        var session: PKCS11Session
        let key: PKCS11Object
    }

    /// Loads the module, finds the token, opens a session, logs in, and finds (or makes)
    /// and checks the root key.
    private static func connect(_ target: Target, pin: SecretBytes, provision: Provision) throws -> Connection {
        // Code this process will run: checked before every load (TrustedPath).
        try TrustedPath.checkModule(target.module, subject: target.location)
        let lease: PKCS11ModuleLease
        do { lease = try PKCS11Module.lease(target.module) } catch { throw target.failure(error, "loading the module") }
        let slot = try findToken(target, lease)
        let session: PKCS11Session
        do { session = try PKCS11Session(lease: lease, slot: slot) } catch { throw target.failure(error, "opening a session") }
        do { try session.login(pin: pin) } catch { throw target.failure(error, "logging in") }

        let found: [PKCS11Object]
        do { found = try session.findSecretKeys(label: target.keyLabel) } catch {
            throw target.failure(error, "looking up the root key")
        }
        if found.count > 1 {
            throw target.error(.tokenFailure,
                               "\(found.count) secret keys on the token are labelled \"\(target.keyLabel)\", so the root key is ambiguous; remove the extra ones (the vault's vault.json records the root key id of the right one)")
        }

        let key: PKCS11Object
        switch provision {
        case .existing, .generateIfMissing:
            if let existing = found.first {
                key = existing
            } else if case .generateIfMissing = provision {
                do { key = try session.generateSecretKey(label: target.keyLabel, byteCount: rootKeyByteCount) } catch {
                    throw target.failure(error, "generating the root key")
                }
                try ensureSole(key, session, target)
            } else {
                throw target.error(.vaultNotFound,
                                   "no secret key labelled \"\(target.keyLabel)\" is on the token; check the key label, or create a vault on this token with `guestvault vault init --pkcs11`")
            }
        case .importKey(let value), .importExtractable(let value):
            guard found.isEmpty else {
                throw target.error(.alreadyExists,
                                   "a secret key labelled \"\(target.keyLabel)\" is already on the token; nothing was changed. Choose another key label, or delete that key first")
            }
            let insecure: Bool
            if case .importExtractable = provision { insecure = true } else { insecure = false }
            do { key = try session.createSecretKey(label: target.keyLabel, value: value, sensitive: !insecure, extractable: insecure) } catch {
                throw target.failure(error, "importing the root key")
            }
            try ensureSole(key, session, target)
            if insecure { return Connection(session: session, key: key) }
        }
        try verify(key, session, target)
        return Connection(session: session, key: key)
    }

    /// The slot of the one present token labelled `target.tokenLabel`. The module is
    /// asked for a fresh slot list every time.
    private static func findToken(_ target: Target, _ lease: PKCS11ModuleLease) throws -> PKCS11Slot {
        let tokens: [PKCS11TokenInfo]
        do { tokens = try lease.module.presentTokens() } catch { throw target.failure(error, "listing the tokens") }
        let matches = tokens.filter { $0.label == target.tokenLabel }
        if matches.count == 1 { return matches[0].slot }
        if matches.count > 1 {
            let serials = matches.map(\.serialNumber).joined(separator: ", ")
            throw target.error(.tokenFailure,
                               "\(matches.count) tokens are labelled \"\(target.tokenLabel)\" (serial numbers \(serials)); give each token its own label")
        }
        let shown = tokens.prefix(8).map { "\"\($0.label)\"" }.joined(separator: ", ")
        let present = tokens.isEmpty ? "the module shows no initialised token"
            : "the module shows \(shown)" + (tokens.count > 8 ? " and \(tokens.count - 8) more" : "")
        throw target.error(.tokenNotFound,
                           "no token labelled \"\(target.tokenLabel)\" is present (\(present)); check the token label and that the token is connected, or initialise one (SoftHSM2: softhsm2-util --init-token --free --label \(target.tokenLabel))")
    }

    /// After creating `key`, makes sure no other program created one with the same label
    /// at the same moment; if one did, removes ours and asks for a retry.
    private static func ensureSole(_ key: PKCS11Object, _ session: borrowing PKCS11Session, _ target: Target) throws {
        let found: [PKCS11Object]
        do { found = try session.findSecretKeys(label: target.keyLabel) } catch {
            throw target.failure(error, "looking up the root key")
        }
        guard found == [key] else {
            try? session.destroy(key)
            throw target.error(.tokenFailure,
                               "another program created a secret key labelled \"\(target.keyLabel)\" at the same moment; the one made here was removed again. Try again")
        }
    }

    /// Refuses a root key whose bytes could leave the token, or that cannot sign.
    private static func verify(_ key: PKCS11Object, _ session: borrowing PKCS11Session, _ target: Target) throws {
        let attributes: PKCS11KeyAttributes
        do { attributes = try session.attributes(of: key) } catch {
            throw target.failure(error, "reading the root key's attributes")
        }
        let name = "the root key object \"\(target.keyLabel)\""
        let remedy = "GuestVault uses only keys that never leave the token; create a vault with a newly generated key (`guestvault vault init --pkcs11` with a new key label) and consider this key exposed"
        guard attributes.extractable == false else {
            let state = attributes.extractable == nil ? "does not report CKA_EXTRACTABLE" : "is extractable (CKA_EXTRACTABLE is true)"
            throw target.error(.insecurePermissions, "\(name) \(state), so its bytes can be read out of the token. \(remedy)")
        }
        guard attributes.sensitive == true else {
            let state = attributes.sensitive == nil ? "does not report CKA_SENSITIVE" : "is not sensitive (CKA_SENSITIVE is false)"
            throw target.error(.insecurePermissions, "\(name) \(state), so its bytes can be read out of the token. \(remedy)")
        }
        guard attributes.canSign != false else {
            throw target.error(.tokenFailure, "\(name) may not sign (CKA_SIGN is false), so the token cannot compute HMAC-SHA256 with it")
        }
        if let length = attributes.valueLength, length < rootKeyByteCount {
            throw target.error(.tokenFailure, "\(name) is \(length) bytes; a root key needs at least \(rootKeyByteCount)")
        }
    }

    // MARK: PIN file

    /// Reads the user PIN: at most 4 KiB, one trailing newline removed, never empty, and
    /// only from a file that neither group nor others can read or write.
    static func readPIN(from path: String) throws -> SecretBytes {
        try SecretFile.read(path, what: "PIN", hint: "write the token's user PIN to it", limit: pinFileLimit)
    }
}

// MARK: -

/// Where the root key is, for connecting and for messages.
private struct Target: Sendable {
    let module: String
    let tokenLabel: String
    let keyLabel: String
    let pinFile: String

    /// Cryptoki token labels are 32 bytes of UTF-8, padded with spaces.
    static let tokenLabelLimit = 32

    init(module: String, tokenLabel: String, keyLabel: String, pinFile: String) throws {
        self.module = module
        self.tokenLabel = tokenLabel
        self.keyLabel = keyLabel
        self.pinFile = pinFile
        if tokenLabel.isEmpty || tokenLabel.utf8.count > Self.tokenLabelLimit || tokenLabel.hasSuffix(" ") {
            throw error(.invalidArgument,
                        "a token label is 1 to \(Self.tokenLabelLimit) bytes of UTF-8 without trailing spaces; \"\(tokenLabel)\" is not")
        }
        if keyLabel.isEmpty {
            throw error(.invalidArgument, "the root key's label is empty; give the label of its secret key object")
        }
    }

    var location: String { "token \(tokenLabel) (module \(module))" }

    func error(_ code: ErrorCode, _ reason: String) -> VaultError {
        VaultError(code, subject: location, reason: reason)
    }

    /// A failure while doing `step`, as the user should see it. The PKCS#11 failure
    /// (function and CKR code) stays underneath.
    func failure(_ error: any Error, _ step: String) -> VaultError {
        if let error = error as? VaultError { return error }
        guard let pkcs11 = error as? PKCS11Error else {
            return VaultError(.tokenFailure, subject: location, reason: "\(step) failed", underlying: error)
        }
        let reason: String
        if pkcs11.kind == .moduleUnavailable {
            reason = "could not use the PKCS#11 module; check the path and that the token vendor's PKCS#11 library is installed there (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so from the softhsm2 package)"
        } else if pkcs11.isIncorrectPIN {
            reason = "the token refused the user PIN from \(pinFile); put the token's user PIN in that file (repeated wrong PINs may lock the token)"
        } else if pkcs11.isPINLocked {
            reason = "the token's user PIN is locked; the token's security officer must unlock or reset it"
        } else if pkcs11.isTokenGone {
            reason = "the token went away while \(step); check that it is connected and try again"
        } else {
            reason = "\(step) failed"
        }
        return VaultError(pkcs11.code, subject: location, reason: reason, underlying: pkcs11)
    }
}
