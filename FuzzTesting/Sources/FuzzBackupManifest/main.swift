// Fuzz target: the backup manifest (`BackupManifest.parse`, docs/BACKUP.md §2). What
// parses names only plain file names, no name twice, and encodes to a manifest that
// parses to the same value.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import GuestVaultBackup

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let manifest = try? BackupManifest.parse(bytes, subject: "fuzz") else { return 0 }
    var names = Set<String>()
    for item in manifest.items {
        precondition(!item.file.contains("/") && item.file != "." && item.file != "..", "a file name with a directory part was accepted")
        precondition(!item.restoredName.isEmpty && !item.restoredName.contains("/"), "a restore name with a directory part was accepted")
        precondition(names.insert(item.file).inserted, "a file listed twice was accepted")
    }
    guard let again = try? BackupManifest.parse(manifest.encoded(), subject: "fuzz") else {
        preconditionFailure("a parsed manifest does not parse after encoding")
    }
    precondition(again == manifest, "a manifest changed through encoding")
    return 0
}
