public import GuestVaultCore

// The error codes of the virtual TPM: the engine, the server's two channels and swtpm's
// formats. `.truncated`, `.malformed` and `.tooLarge` are GuestVaultCore's.

extension ErrorCode {
    // MARK: Engine

    /// libtpms keeps one TPM per process and one is already running.
    public static let alreadyRunning = ErrorCode("alreadyRunning", .locked)
    /// The engine is not running (stopped, or never started).
    public static let notRunning = ErrorCode("notRunning", .usage)
    /// libtpms refused: its TPM_RESULT is in the error.
    public static let libtpms = ErrorCode("libtpms", .failure)
    /// A TPM command returned an error response code.
    public static let tpmError = ErrorCode("tpmError", .failure)
    /// The TPM's state could not be loaded or stored (the cause is the underlying error).
    public static let storage = ErrorCode("storage", .io)

    // MARK: Control and data channel

    /// A control-channel command code swtpm does not know.
    public static let unknownCommand = ErrorCode("unknownCommand", .peer)
    /// A control-channel length field, or a whole request, is over its cap.
    public static let lengthOverLimit = ErrorCode("lengthOverLimit", .limit)
    /// A data-channel command's size is below the 10-byte TPM header.
    public static let sizeTooSmall = ErrorCode("sizeTooSmall", .peer)
    /// A data-channel command's size is over the buffer size.
    public static let sizeOverLimit = ErrorCode("sizeOverLimit", .limit)

    // MARK: swtpm state files

    /// Bytes follow the last record, or the file is longer than its header says.
    public static let trailingBytes = ErrorCode("trailingBytes", .integrity)
    /// The header's version is not one this reader knows.
    public static let unsupportedVersion = ErrorCode("unsupportedVersion", .unsupported)
    /// A header field other than the version is wrong (size, flags).
    public static let badHeader = ErrorCode("badHeader", .integrity)
    /// A record's length is wrong for what the record holds.
    public static let badLength = ErrorCode("badLength", .integrity)
    /// A record has a tag swtpm does not define.
    public static let unknownTag = ErrorCode("unknownTag", .integrity)
    /// A record appears twice.
    public static let duplicateRecord = ErrorCode("duplicateRecord", .integrity)
    /// A record the file needs is not there.
    public static let missingRecord = ErrorCode("missingRecord", .integrity)
    /// A record that does not belong in this kind of file.
    public static let unexpectedRecord = ErrorCode("unexpectedRecord", .integrity)
    /// The decrypted data's padding is malformed.
    public static let badPadding = ErrorCode("badPadding", .integrity)
    /// The data is encrypted and no key was given.
    public static let keyRequired = ErrorCode("keyRequired", .keys)
    /// The key's size does not match the one the data was written with.
    public static let wrongKeySize = ErrorCode("wrongKeySize", .keys)
    /// A key was given but the data is not encrypted.
    public static let notEncrypted = ErrorCode("notEncrypted", .usage)
    /// A `--key` or `--pwdfile` option is malformed.
    public static let badKeyOption = ErrorCode("badKeyOption", .usage)
    /// A key file's content is not a key of the expected kind.
    public static let badKeyFile = ErrorCode("badKeyFile", .keys)

    // MARK: swtpm state directories

    /// The directory is missing or holds no swtpm TPM 2.0 state.
    public static let notAStateDirectory = ErrorCode("notAStateDirectory", .notFound)
    /// An swtpm process holds the directory's lock.
    public static let inUse = ErrorCode("inUse", .locked)
    /// The export directory already holds files and overwriting was not asked for.
    public static let notEmpty = ErrorCode("notEmpty", .alreadyExists)
    /// The container has no TPM state to export.
    public static let missingEntry = ErrorCode("missingEntry", .notFound)
    /// libtpms refused the state.
    public static let validationFailed = ErrorCode("validationFailed", .integrity)
}
