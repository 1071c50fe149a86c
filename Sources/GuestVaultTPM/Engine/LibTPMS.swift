internal import CLibTPMS
import GuestVaultCore

/// Facts about the linked libtpms.
public enum LibTPMS {
    /// libtpms' version as "major.minor.micro".
    public static var version: String {
        let raw = TPMLIB_GetVersion()
        return "\((raw >> 16) & 0xff).\((raw >> 8) & 0xff).\(raw & 0xff)"
    }
}
