internal import CPKCS11
import GuestVaultCore
import GuestVaultCrypto
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The PKCS#11 pointer layer. Every pointer, `dlopen` and Cryptoki call GuestVault makes
// goes through this file, so there is one place to audit. It knows nothing about vaults:
// it loads a module, finds tokens, runs sessions and reports failures as `PKCS11Error`.
// Policy (which key, which attributes are acceptable, what a failure means to the
// user) is in PKCS11RootKey.swift.

// MARK: Constants the importer cannot see

/// `CK_UNAVAILABLE_INFORMATION` is `(~0UL)`, which Swift does not import.
private let unavailableInformation: CK_ULONG = ~0
/// `CKR_VENDOR_DEFINED` is `(1UL << 31)` with a cast, which Swift does not import.
private let vendorDefinedReturnValues: CK_RV = 1 << 31
private let ckTrue = CK_BBOOL(CK_TRUE)
private let ckFalse = CK_BBOOL(CK_FALSE)

// MARK: Errors

/// A failed PKCS#11 step: which function and what it returned, or why the module could
/// not be used. Never carries a PIN or key bytes.
struct PKCS11Error: GuestVaultError {
    enum Kind: Sendable, Equatable {
        /// The module could not be loaded, is not a PKCS#11 module, or did not initialise.
        case moduleUnavailable
        /// A Cryptoki function returned something other than CKR_OK.
        case returned(UInt)
        /// The token is already logged in in this process, with a PIN that is not this one.
        case loggedInWithAnotherPIN
        /// The module broke the PKCS#11 contract (an output of the wrong length, say).
        case protocolViolation
    }

    let kind: Kind
    /// The function that failed ("dlopen", "C_Login", ...).
    let function: String
    let detail: String

    let underlying: (any Error & Sendable)?
    let location: SourceLocation

    init(_ kind: Kind, _ function: String, _ detail: String = "", underlying: (any Error & Sendable)? = nil,
         file: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.function = function
        self.detail = detail
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    /// The vault code this failure stands for: a refused PIN is `.wrongPIN`, a missing
    /// token `.tokenNotFound`, a module that does not load `.moduleUnavailable`.
    var code: ErrorCode {
        if kind == .moduleUnavailable { return .moduleUnavailable }
        if isIncorrectPIN { return .wrongPIN }
        if isTokenGone { return .tokenNotFound }
        return .tokenFailure
    }

    var returnValue: UInt? {
        if case .returned(let value) = kind { return value }
        return nil
    }

    var message: String {
        switch kind {
        case .returned(let value):
            let call = "\(function) returned \(PKCS11ReturnValue.describe(value))"
            return detail.isEmpty ? call : "\(call); \(detail)"
        case .moduleUnavailable, .loggedInWithAnotherPIN, .protocolViolation:
            return "\(function): \(detail)"
        }
    }

    /// The token refused the PIN (or, already logged in, the PIN does not match).
    var isIncorrectPIN: Bool {
        kind == .loggedInWithAnotherPIN
            || [CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE].contains(returnValue ?? CKR_OK)
    }

    var isPINLocked: Bool { returnValue == CKR_PIN_LOCKED }

    /// The token or its slot is gone.
    var isTokenGone: Bool {
        [CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_RECOGNIZED]
            .contains(returnValue ?? CKR_OK)
    }

    /// The session handle no longer names a session (the token closed it).
    var isSessionGone: Bool {
        [CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT]
            .contains(returnValue ?? CKR_OK)
    }

    /// A fresh session, login and key lookup may cure this failure: the token closed the
    /// session, logged the user out, or dropped the object handles.
    var suggestsReconnecting: Bool {
        isSessionGone
            || [CKR_USER_NOT_LOGGED_IN, CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID].contains(returnValue ?? CKR_OK)
    }
}

/// Names of the CKR_ return values users are likely to meet.
enum PKCS11ReturnValue {
    /// "CKR_PIN_INCORRECT (0xa0)", or "0x80000001 (vendor-defined)" for codes not listed.
    static func describe(_ value: UInt) -> String {
        let hex = "0x" + String(value, radix: 16)
        if let name = name(value) { return "\(name) (\(hex))" }
        return value >= vendorDefinedReturnValues ? "\(hex) (vendor-defined)" : "\(hex) (an unlisted CKR code)"
    }

    static func name(_ value: UInt) -> String? {
        switch value {
        case CKR_OK: "CKR_OK"
        case CKR_CANCEL: "CKR_CANCEL"
        case CKR_HOST_MEMORY: "CKR_HOST_MEMORY"
        case CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID"
        case CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR"
        case CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED"
        case CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD"
        case CKR_CANT_LOCK: "CKR_CANT_LOCK"
        case CKR_ATTRIBUTE_READ_ONLY: "CKR_ATTRIBUTE_READ_ONLY"
        case CKR_ATTRIBUTE_SENSITIVE: "CKR_ATTRIBUTE_SENSITIVE"
        case CKR_ATTRIBUTE_TYPE_INVALID: "CKR_ATTRIBUTE_TYPE_INVALID"
        case CKR_ATTRIBUTE_VALUE_INVALID: "CKR_ATTRIBUTE_VALUE_INVALID"
        case CKR_DATA_INVALID: "CKR_DATA_INVALID"
        case CKR_DATA_LEN_RANGE: "CKR_DATA_LEN_RANGE"
        case CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR"
        case CKR_DEVICE_MEMORY: "CKR_DEVICE_MEMORY"
        case CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED"
        case CKR_FUNCTION_CANCELED: "CKR_FUNCTION_CANCELED"
        case CKR_FUNCTION_NOT_SUPPORTED: "CKR_FUNCTION_NOT_SUPPORTED"
        case CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID"
        case CKR_KEY_SIZE_RANGE: "CKR_KEY_SIZE_RANGE"
        case CKR_KEY_TYPE_INCONSISTENT: "CKR_KEY_TYPE_INCONSISTENT"
        case CKR_KEY_FUNCTION_NOT_PERMITTED: "CKR_KEY_FUNCTION_NOT_PERMITTED"
        case CKR_KEY_UNEXTRACTABLE: "CKR_KEY_UNEXTRACTABLE"
        case CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID"
        case CKR_MECHANISM_PARAM_INVALID: "CKR_MECHANISM_PARAM_INVALID"
        case CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID"
        case CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE"
        case CKR_OPERATION_NOT_INITIALIZED: "CKR_OPERATION_NOT_INITIALIZED"
        case CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT"
        case CKR_PIN_INVALID: "CKR_PIN_INVALID"
        case CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE"
        case CKR_PIN_EXPIRED: "CKR_PIN_EXPIRED"
        case CKR_PIN_LOCKED: "CKR_PIN_LOCKED"
        case CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED"
        case CKR_SESSION_COUNT: "CKR_SESSION_COUNT"
        case CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID"
        case CKR_SESSION_READ_ONLY: "CKR_SESSION_READ_ONLY"
        case CKR_TEMPLATE_INCOMPLETE: "CKR_TEMPLATE_INCOMPLETE"
        case CKR_TEMPLATE_INCONSISTENT: "CKR_TEMPLATE_INCONSISTENT"
        case CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT"
        case CKR_TOKEN_NOT_RECOGNIZED: "CKR_TOKEN_NOT_RECOGNIZED"
        case CKR_TOKEN_WRITE_PROTECTED: "CKR_TOKEN_WRITE_PROTECTED"
        case CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN"
        case CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN"
        case CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED"
        case CKR_USER_TYPE_INVALID: "CKR_USER_TYPE_INVALID"
        case CKR_USER_ANOTHER_ALREADY_LOGGED_IN: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"
        case CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL"
        case CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED"
        case CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED"
        default: nil
        }
    }
}

/// Throws unless `value` is CKR_OK.
private func check(_ value: CK_RV, _ function: String) throws(PKCS11Error) {
    guard value == CKR_OK else { throw PKCS11Error(.returned(value), function) }
}

// MARK: Plain values the rest of the package sees

/// A slot ID (as a Swift integer, so no C type leaves this file).
struct PKCS11Slot: Sendable, Hashable {
    let id: UInt
}

/// An object handle, valid while a session of this application is open on the token.
struct PKCS11Object: Sendable, Hashable {
    let handle: UInt
}

/// A token present in a slot: its label (trailing padding removed) and serial number.
struct PKCS11TokenInfo: Sendable {
    let slot: PKCS11Slot
    let label: String
    let serialNumber: String
}

/// What a secret key object says about itself; nil where the token does not say.
package struct PKCS11KeyAttributes: Sendable, Equatable {
    package var extractable: Bool?
    package var sensitive: Bool?
    package var alwaysSensitive: Bool?
    package var neverExtractable: Bool?
    package var canSign: Bool?
    package var valueLength: Int?
}

/// The outcome of asking the token for a key's CKA_VALUE (a diagnostic for tests).
package enum PKCS11ValueReadOutcome: Sendable, Equatable {
    /// The token refused; the associated value is the CKR code, e.g.
    /// "CKR_ATTRIBUTE_SENSITIVE (0x11)".
    case refused(String)
    /// The token handed the bytes out. Only the count is kept; the bytes were wiped.
    case readable(byteCount: Int)
}

// MARK: Module

/// A loaded and initialised PKCS#11 module, shared by everything in the process that
/// names the same file: Cryptoki allows one C_Initialize per process, so the module is
/// kept in a process-wide registry keyed by its resolved path and counted by leases.
/// The last lease to go calls C_Finalize (if this process initialised it) and unloads it.
///
/// `@unchecked Sendable`: the library handle and function list are written once in
/// `init`; the module is initialised with CKF_OS_LOCKING_OK, so calls on different
/// sessions may run on different threads (one session is still one thread at a time:
/// its owner guards it with a Mutex).
final class PKCS11Module: @unchecked Sendable {
    /// The path as the user gave it, for messages.
    let path: String
    /// The path with symbolic links resolved: the registry key.
    let resolvedPath: String
    private let library: UnsafeMutableRawPointer
    fileprivate let functions: Functions
    /// False when another component of this process had already initialised the
    /// module: then finalising it is theirs to do.
    private let initializedHere: Bool
    /// Per slot, HMAC-SHA256(key: PIN, salt) of the PIN that last logged the user in.
    /// Cryptoki's login state is per application: a second C_Login answers
    /// CKR_USER_ALREADY_LOGGED_IN without looking at the PIN, so a second vault opened
    /// with a wrong PIN would otherwise succeed.
    private let loginSalt: [UInt8]
    private let logins = Mutex<[UInt: [UInt8]]>([:])

    private struct Entry {
        let module: PKCS11Module
        var leases: Int
    }

    private static let registry = Mutex<[String: Entry]>([:])

    /// The function pointers this layer calls, checked once when the module loads.
    fileprivate struct Functions {
        let initialize: CK_C_Initialize
        let finalize: CK_C_Finalize
        let getSlotList: CK_C_GetSlotList
        let getTokenInfo: CK_C_GetTokenInfo
        let openSession: CK_C_OpenSession
        let closeSession: CK_C_CloseSession
        let closeAllSessions: CK_C_CloseAllSessions
        let login: CK_C_Login
        let createObject: CK_C_CreateObject
        let destroyObject: CK_C_DestroyObject
        let getAttributeValue: CK_C_GetAttributeValue
        let findObjectsInit: CK_C_FindObjectsInit
        let findObjects: CK_C_FindObjects
        let findObjectsFinal: CK_C_FindObjectsFinal
        let signInit: CK_C_SignInit
        let sign: CK_C_Sign
        let generateKey: CK_C_GenerateKey

        init(_ list: UnsafeMutablePointer<CK_FUNCTION_LIST>) throws(PKCS11Error) {
            func need<F>(_ function: F?, _ name: String) throws(PKCS11Error) -> F {
                guard let function else {
                    throw PKCS11Error(.moduleUnavailable, "C_GetFunctionList", "the module's function list has no \(name)")
                }
                return function
            }
            let l = list.pointee
            initialize = try need(l.C_Initialize, "C_Initialize")
            finalize = try need(l.C_Finalize, "C_Finalize")
            getSlotList = try need(l.C_GetSlotList, "C_GetSlotList")
            getTokenInfo = try need(l.C_GetTokenInfo, "C_GetTokenInfo")
            openSession = try need(l.C_OpenSession, "C_OpenSession")
            closeSession = try need(l.C_CloseSession, "C_CloseSession")
            closeAllSessions = try need(l.C_CloseAllSessions, "C_CloseAllSessions")
            login = try need(l.C_Login, "C_Login")
            createObject = try need(l.C_CreateObject, "C_CreateObject")
            destroyObject = try need(l.C_DestroyObject, "C_DestroyObject")
            getAttributeValue = try need(l.C_GetAttributeValue, "C_GetAttributeValue")
            findObjectsInit = try need(l.C_FindObjectsInit, "C_FindObjectsInit")
            findObjects = try need(l.C_FindObjects, "C_FindObjects")
            findObjectsFinal = try need(l.C_FindObjectsFinal, "C_FindObjectsFinal")
            signInit = try need(l.C_SignInit, "C_SignInit")
            sign = try need(l.C_Sign, "C_Sign")
            generateKey = try need(l.C_GenerateKey, "C_GenerateKey")
        }
    }

    /// A counted use of the module at `path` (absolute), loading and initialising it if
    /// this process does not hold it yet.
    static func lease(_ path: String) throws(PKCS11Error) -> PKCS11ModuleLease {
        guard path.hasPrefix("/") else {
            throw PKCS11Error(.moduleUnavailable, "dlopen",
                              "the module path must be absolute (for example /usr/lib/softhsm/libsofthsm2.so), so no library search path can substitute another library")
        }
        guard let resolvedPointer = realpath(path, nil) else {
            let reason = String(cString: strerror(errno))
            throw PKCS11Error(.moduleUnavailable, "dlopen", "cannot open the module: \(reason)")
        }
        let resolved = String(cString: resolvedPointer)
        free(resolvedPointer)
        let module = try registry.withLock { (entries) throws(PKCS11Error) -> PKCS11Module in
            if var entry = entries[resolved] {
                entry.leases += 1
                entries[resolved] = entry
                return entry.module
            }
            let module = try PKCS11Module(path: path, resolvedPath: resolved)
            entries[resolved] = Entry(module: module, leases: 1)
            return module
        }
        return PKCS11ModuleLease(module)
    }

    /// Gives back one lease; the last one finalises and unloads the module. Runs under
    /// the registry lock, so a new lease never sees a module half torn down.
    fileprivate static func release(_ module: PKCS11Module) {
        registry.withLock { entries in
            guard var entry = entries[module.resolvedPath], entry.module === module else { return }
            entry.leases -= 1
            if entry.leases > 0 {
                entries[module.resolvedPath] = entry
                return
            }
            entries[module.resolvedPath] = nil
            if module.initializedHere {
                _ = module.functions.finalize(nil)
            }
            dlclose(module.library)
        }
    }

    private init(path: String, resolvedPath: String) throws(PKCS11Error) {
        guard let library = dlopen(resolvedPath, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen failure"
            throw PKCS11Error(.moduleUnavailable, "dlopen", "cannot load the module: \(reason)")
        }
        do throws(PKCS11Error) {
            guard let symbol = dlsym(library, "C_GetFunctionList") else {
                throw PKCS11Error(.moduleUnavailable, "dlsym",
                                  "the library has no C_GetFunctionList, so it is not a PKCS#11 module")
            }
            let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
            var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
            try check(getFunctionList(&list), "C_GetFunctionList")
            guard let list else {
                throw PKCS11Error(.moduleUnavailable, "C_GetFunctionList", "the module returned no function list")
            }
            guard list.pointee.version.major == 2 || list.pointee.version.major == 3 else {
                throw PKCS11Error(.moduleUnavailable, "C_GetFunctionList",
                                  "the module speaks Cryptoki \(list.pointee.version.major).\(list.pointee.version.minor); GuestVault needs 2.x or 3.x")
            }
            let functions = try Functions(list)
            var arguments = CK_C_INITIALIZE_ARGS()
            arguments.flags = CKF_OS_LOCKING_OK
            let value = withUnsafeMutablePointer(to: &arguments) { functions.initialize(UnsafeMutableRawPointer($0)) }
            let initialized: Bool
            switch value {
            case CKR_OK: initialized = true
            case CKR_CRYPTOKI_ALREADY_INITIALIZED: initialized = false
            default: throw PKCS11Error(.moduleUnavailable, "C_Initialize",
                                       "the module did not initialise: C_Initialize returned \(PKCS11ReturnValue.describe(value))")
            }
            let salt: [UInt8]
            do {
                salt = try SecureRandom.bytes(count: 32)
            } catch {
                if initialized { _ = functions.finalize(nil) }
                throw PKCS11Error(.moduleUnavailable, "C_Initialize", "no random bytes for the login check", underlying: error)
            }
            self.functions = functions
            self.initializedHere = initialized
            self.loginSalt = salt
        } catch {
            dlclose(library)
            throw error
        }
        self.path = path
        self.resolvedPath = resolvedPath
        self.library = library
    }

    /// Every initialised token present, asking the module for a fresh slot list each time.
    func presentTokens() throws(PKCS11Error) -> [PKCS11TokenInfo] {
        var slots: [CK_SLOT_ID] = []
        var attempts = 0
        while true {
            var count: CK_ULONG = 0
            try check(functions.getSlotList(ckTrue, nil, &count), "C_GetSlotList")
            slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
            let value = slots.withUnsafeMutableBufferPointer { functions.getSlotList(ckTrue, $0.baseAddress, &count) }
            attempts += 1
            // A token may have appeared between the two calls.
            if value == CKR_BUFFER_TOO_SMALL && attempts < 8 { continue }
            try check(value, "C_GetSlotList")
            slots.removeSubrange(min(Int(count), slots.count)...)
            break
        }
        var tokens: [PKCS11TokenInfo] = []
        for slot in slots {
            var info = CK_TOKEN_INFO()
            let value = functions.getTokenInfo(slot, &info)
            if [CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKR_SLOT_ID_INVALID, CKR_DEVICE_REMOVED].contains(value) {
                continue
            }
            try check(value, "C_GetTokenInfo")
            guard info.flags & CKF_TOKEN_INITIALIZED != 0 else { continue }
            tokens.append(PKCS11TokenInfo(slot: PKCS11Slot(id: slot),
                                          label: Self.paddedText(info.label),
                                          serialNumber: Self.paddedText(info.serialNumber)))
        }
        return tokens
    }

    /// A fixed-width Cryptoki text field without its padding (spaces; some tokens use NULs).
    private static func paddedText<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { bytes in
            var end = bytes.count
            while end > 0 && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0) { end -= 1 }
            return String(decoding: bytes[0..<end], as: UTF8.self)
        }
    }

    fileprivate func rememberLogin(slot: PKCS11Slot, pin: SecretBytes) {
        let proof = try? HMACSHA256.authenticationCode(for: loginSalt, key: pin)
        logins.withLock { $0[slot.id] = proof }
    }

    /// Whether `pin` is the PIN this process logged the token in with. True when this
    /// process has no record (another component of the process logged in): then there
    /// is nothing to check against.
    fileprivate func loginMatches(slot: PKCS11Slot, pin: SecretBytes) -> Bool {
        guard let recorded = logins.withLock({ $0[slot.id] }) else { return true }
        guard let proof = try? HMACSHA256.authenticationCode(for: loginSalt, key: pin) else { return false }
        return constantTimeEquals(proof, recorded)
    }
}

/// One counted use of a ``PKCS11Module``; the module stays loaded while a lease lives.
final class PKCS11ModuleLease: Sendable {
    let module: PKCS11Module

    fileprivate init(_ module: PKCS11Module) { self.module = module }

    deinit { PKCS11Module.release(module) }
}

// MARK: Session

/// A read-write session on one token, closed when the value goes away. Not thread-safe
/// (Cryptoki sessions are not): its owner keeps it behind a Mutex.
struct PKCS11Session: ~Copyable {
    let lease: PKCS11ModuleLease
    let slot: PKCS11Slot
    private let handle: CK_SESSION_HANDLE
    /// Cleared when the token has already closed the session, so that `deinit` does not
    /// close a handle number the module may since have given to another session.
    private var ownsHandle = true

    private var functions: PKCS11Module.Functions { lease.module.functions }

    init(lease: PKCS11ModuleLease, slot: PKCS11Slot) throws(PKCS11Error) {
        var handle: CK_SESSION_HANDLE = CK_INVALID_HANDLE
        try check(lease.module.functions.openSession(slot.id, CKF_SERIAL_SESSION | CKF_RW_SESSION, nil, nil, &handle),
                  "C_OpenSession")
        self.lease = lease
        self.slot = slot
        self.handle = handle
    }

    deinit {
        if ownsHandle { _ = functions.closeSession(handle) }
    }

    /// The token closed this session (CKR_SESSION_HANDLE_INVALID and the like): forget
    /// the handle instead of closing it.
    mutating func forgetHandle() {
        ownsHandle = false
    }

    /// C_Login as the normal user. CKR_USER_ALREADY_LOGGED_IN counts as success only if
    /// `pin` is the PIN this process logged in with.
    func login(pin: SecretBytes) throws(PKCS11Error) {
        let value = pin.withUnsafeBytes { bytes -> CK_RV in
            guard let base = bytes.baseAddress else { return CKR_PIN_LEN_RANGE }
            return functions.login(handle, CKU_USER,
                                   UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: CK_UTF8CHAR.self)),
                                   CK_ULONG(bytes.count))
        }
        switch value {
        case CKR_OK:
            lease.module.rememberLogin(slot: slot, pin: pin)
        case CKR_USER_ALREADY_LOGGED_IN:
            guard lease.module.loginMatches(slot: slot, pin: pin) else {
                throw PKCS11Error(.loggedInWithAnotherPIN, "C_Login",
                                  "the token is already logged in in this process, and this PIN is not the one it was logged in with")
            }
        default:
            throw PKCS11Error(.returned(value), "C_Login")
        }
    }

    /// Secret key objects labelled `label` (CKA_CLASS CKO_SECRET_KEY, CKA_LABEL `label`).
    func findSecretKeys(label: String) throws(PKCS11Error) -> [PKCS11Object] {
        var template = AttributeTemplate()
        template.add(CKA_CLASS, CKO_SECRET_KEY)
        template.add(CKA_LABEL, bytes: Array(label.utf8))
        let handle = handle, functions = functions
        try template.withAttributes { attributes, count throws(PKCS11Error) in
            try check(functions.findObjectsInit(handle, attributes, count), "C_FindObjectsInit")
        }
        defer { _ = functions.findObjectsFinal(handle) }
        var found: [PKCS11Object] = []
        var batch = [CK_OBJECT_HANDLE](repeating: CK_INVALID_HANDLE, count: 16)
        while found.count < 1024 {
            var count: CK_ULONG = 0
            let value = batch.withUnsafeMutableBufferPointer {
                functions.findObjects(handle, $0.baseAddress, CK_ULONG($0.count), &count)
            }
            try check(value, "C_FindObjects")
            if count == 0 { break }
            found += batch.prefix(min(Int(count), batch.count)).map { PKCS11Object(handle: $0) }
        }
        return found
    }

    /// Generates a token secret key inside the token (CKM_GENERIC_SECRET_KEY_GEN):
    /// private, sensitive, not extractable, for HMAC signing and verifying.
    func generateSecretKey(label: String, byteCount: Int) throws(PKCS11Error) -> PKCS11Object {
        var template = AttributeTemplate.secretKey(label: label, sensitive: true, extractable: false)
        template.add(CKA_VALUE_LEN, CK_ULONG(byteCount))
        var mechanism = CK_MECHANISM(mechanism: CKM_GENERIC_SECRET_KEY_GEN, pParameter: nil, ulParameterLen: 0)
        var key: CK_OBJECT_HANDLE = CK_INVALID_HANDLE
        let handle = handle, functions = functions
        try template.withAttributes { attributes, count throws(PKCS11Error) in
            try check(functions.generateKey(handle, &mechanism, attributes, count, &key), "C_GenerateKey")
        }
        return PKCS11Object(handle: key)
    }

    /// Stores `value` as a token secret key (C_CreateObject). CKA_VALUE_LEN is left out:
    /// PKCS#11 forbids it in C_CreateObject for generic secret keys (the token takes the
    /// length from CKA_VALUE).
    func createSecretKey(label: String, value: SecretBytes, sensitive: Bool, extractable: Bool) throws(PKCS11Error) -> PKCS11Object {
        var template = AttributeTemplate.secretKey(label: label, sensitive: sensitive, extractable: extractable)
        template.add(CKA_VALUE, secret: value)
        var key: CK_OBJECT_HANDLE = CK_INVALID_HANDLE
        let handle = handle, functions = functions
        try template.withAttributes { attributes, count throws(PKCS11Error) in
            try check(functions.createObject(handle, attributes, count, &key), "C_CreateObject")
        }
        return PKCS11Object(handle: key)
    }

    func destroy(_ object: PKCS11Object) throws(PKCS11Error) {
        try check(functions.destroyObject(handle, object.handle), "C_DestroyObject")
    }

    /// The security-relevant attributes of a secret key object.
    func attributes(of object: PKCS11Object) throws(PKCS11Error) -> PKCS11KeyAttributes {
        PKCS11KeyAttributes(
            extractable: try bool(object, CKA_EXTRACTABLE),
            sensitive: try bool(object, CKA_SENSITIVE),
            alwaysSensitive: try bool(object, CKA_ALWAYS_SENSITIVE),
            neverExtractable: try bool(object, CKA_NEVER_EXTRACTABLE),
            canSign: try bool(object, CKA_SIGN),
            valueLength: try unsigned(object, CKA_VALUE_LEN).flatMap { Int(exactly: $0) })
    }

    /// Asks for the object's CKA_VALUE. A non-extractable, sensitive key must be refused;
    /// if the token hands the bytes out anyway, they are wiped and only the count returned.
    func valueReadOutcome(of object: PKCS11Object) throws(PKCS11Error) -> PKCS11ValueReadOutcome {
        var attribute = CK_ATTRIBUTE(type: CKA_VALUE, pValue: nil, ulValueLen: 0)
        var value = functions.getAttributeValue(handle, object.handle, &attribute, 1)
        guard value == CKR_OK else { return .refused(PKCS11ReturnValue.describe(value)) }
        guard attribute.ulValueLen != unavailableInformation, let length = Int(exactly: attribute.ulValueLen) else {
            return .refused("CKR_OK with CK_UNAVAILABLE_INFORMATION")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 16)
        defer {
            explicit_bzero(buffer.baseAddress!, buffer.count)
            buffer.deallocate()
        }
        attribute.pValue = buffer.baseAddress
        attribute.ulValueLen = CK_ULONG(length)
        value = functions.getAttributeValue(handle, object.handle, &attribute, 1)
        guard value == CKR_OK else { return .refused(PKCS11ReturnValue.describe(value)) }
        return .readable(byteCount: Int(clamping: attribute.ulValueLen))
    }

    /// HMAC-SHA256 of `message` under `key`, computed inside the token (CKM_SHA256_HMAC).
    func hmacSHA256(key: PKCS11Object, message: [UInt8]) throws(PKCS11Error) -> SecretBytes {
        var mechanism = CK_MECHANISM(mechanism: CKM_SHA256_HMAC, pParameter: nil, ulParameterLen: 0)
        try check(functions.signInit(handle, &mechanism, key.handle), "C_SignInit")
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 32, alignment: 16)
        defer {
            explicit_bzero(output.baseAddress!, output.count)
            output.deallocate()
        }
        var length = CK_ULONG(output.count)
        // A trailing byte that is not signed keeps the pointer valid for an empty message.
        var data = message + [0]
        let value = data.withUnsafeMutableBufferPointer { buffer in
            functions.sign(handle, buffer.baseAddress, CK_ULONG(message.count),
                           output.baseAddress!.assumingMemoryBound(to: CK_BYTE.self), &length)
        }
        try check(value, "C_Sign")
        guard length == 32 else {
            throw PKCS11Error(.protocolViolation, "C_Sign", "CKM_SHA256_HMAC gave \(length) bytes instead of 32")
        }
        return SecretBytes(copying: UnsafeRawBufferPointer(output))
    }

    /// C_CloseAllSessions on this session's slot: every session this process has on the
    /// token, this one included, is closed (a diagnostic: it is what a token reset does).
    func closeAllSessionsOnSlot() throws(PKCS11Error) {
        try check(functions.closeAllSessions(slot.id), "C_CloseAllSessions")
    }

    private func bool(_ object: PKCS11Object, _ type: CK_ATTRIBUTE_TYPE) throws(PKCS11Error) -> Bool? {
        var value: CK_BBOOL = 0
        let length = try withUnsafeMutableBytes(of: &value) { (bytes) throws(PKCS11Error) -> Int? in
            try attribute(object, type, into: bytes)
        }
        return length == 1 ? value != ckFalse : nil
    }

    private func unsigned(_ object: PKCS11Object, _ type: CK_ATTRIBUTE_TYPE) throws(PKCS11Error) -> UInt? {
        var value: CK_ULONG = 0
        let length = try withUnsafeMutableBytes(of: &value) { (bytes) throws(PKCS11Error) -> Int? in
            try attribute(object, type, into: bytes)
        }
        return length == MemoryLayout<CK_ULONG>.size ? value : nil
    }

    /// Reads one attribute into `buffer`; nil when the token does not have it or will
    /// not say (CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_SENSITIVE).
    private func attribute(_ object: PKCS11Object, _ type: CK_ATTRIBUTE_TYPE,
                           into buffer: UnsafeMutableRawBufferPointer) throws(PKCS11Error) -> Int? {
        var attribute = CK_ATTRIBUTE(type: type, pValue: buffer.baseAddress, ulValueLen: CK_ULONG(buffer.count))
        let value = functions.getAttributeValue(handle, object.handle, &attribute, 1)
        switch value {
        case CKR_OK:
            return attribute.ulValueLen == unavailableInformation ? nil : Int(exactly: attribute.ulValueLen)
        case CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_SENSITIVE:
            return nil
        default:
            throw PKCS11Error(.returned(value), "C_GetAttributeValue")
        }
    }
}

// MARK: Attribute templates

/// A CK_ATTRIBUTE array whose values live in memory this value owns, wiped and freed
/// when it goes away (a template may hold key bytes).
private struct AttributeTemplate: ~Copyable {
    private var attributes: [CK_ATTRIBUTE] = []
    private var storage: [UnsafeMutableRawBufferPointer] = []

    init() {}

    /// The attributes of a GuestVault root key: a token-resident, private generic secret
    /// used only for HMAC signing and verifying.
    static func secretKey(label: String, sensitive: Bool, extractable: Bool) -> AttributeTemplate {
        var template = AttributeTemplate()
        template.add(CKA_CLASS, CKO_SECRET_KEY)
        template.add(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        template.add(CKA_TOKEN, true)
        template.add(CKA_PRIVATE, true)
        template.add(CKA_SENSITIVE, sensitive)
        template.add(CKA_EXTRACTABLE, extractable)
        template.add(CKA_SIGN, true)
        template.add(CKA_VERIFY, true)
        template.add(CKA_LABEL, bytes: Array(label.utf8))
        return template
    }

    mutating func add(_ type: CK_ATTRIBUTE_TYPE, _ value: Bool) {
        var byte = value ? ckTrue : ckFalse
        withUnsafeBytes(of: &byte) { append(type, $0) }
    }

    mutating func add(_ type: CK_ATTRIBUTE_TYPE, _ value: CK_ULONG) {
        var value = value
        withUnsafeBytes(of: &value) { append(type, $0) }
    }

    mutating func add(_ type: CK_ATTRIBUTE_TYPE, bytes: [UInt8]) {
        bytes.withUnsafeBytes { append(type, $0) }
    }

    mutating func add(_ type: CK_ATTRIBUTE_TYPE, secret: SecretBytes) {
        secret.withUnsafeBytes { append(type, $0) }
    }

    private mutating func append(_ type: CK_ATTRIBUTE_TYPE, _ bytes: UnsafeRawBufferPointer) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        if let base = bytes.baseAddress, bytes.count > 0 {
            buffer.baseAddress!.copyMemory(from: base, byteCount: bytes.count)
        }
        storage.append(buffer)
        attributes.append(CK_ATTRIBUTE(type: type, pValue: buffer.baseAddress, ulValueLen: CK_ULONG(bytes.count)))
    }

    mutating func withAttributes<R>(
        _ body: (UnsafeMutablePointer<CK_ATTRIBUTE>, CK_ULONG) throws(PKCS11Error) -> R
    ) throws(PKCS11Error) -> R {
        let count = CK_ULONG(attributes.count)
        return try attributes.withUnsafeMutableBufferPointer { (buffer) throws(PKCS11Error) -> R in
            try body(buffer.baseAddress!, count)
        }
    }

    deinit {
        for buffer in storage {
            explicit_bzero(buffer.baseAddress!, buffer.count)
            buffer.deallocate()
        }
    }
}
