/// Errors of the TPM engine and the server.
public struct TPMEngineError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// libtpms keeps one TPM per process and one is already running.
        public static let alreadyRunning = Code("alreadyRunning")
        /// The engine is not running (stopped, or never started).
        public static let notRunning = Code("notRunning")
        /// libtpms refused: its TPM_RESULT is in the reason.
        public static let libtpms = Code("libtpms")
        /// A TPM command or response is malformed.
        public static let malformed = Code("malformed")
        /// A TPM command returned an error response code.
        public static let tpmError = Code("tpmError")
        /// The state could not be loaded or stored.
        public static let storage = Code("storage")
    }

    public let code: Code
    public let reason: String
    /// The TPM response code, for `.tpmError` and `.libtpms`.
    public let responseCode: UInt32?

    public init(_ code: Code, _ reason: String, responseCode: UInt32? = nil) {
        self.code = code
        self.reason = reason
        self.responseCode = responseCode
    }

    public var description: String { reason }
}
