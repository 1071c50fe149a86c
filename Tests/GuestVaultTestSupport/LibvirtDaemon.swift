import Foundation

/// A private libvirtd 9.0 (Debian's, without systemd) for tests, as ../shared FACTS
/// describe: in its own mount namespace (`unshare -m --propagation private`) with
/// private directories bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/// /var/log/libvirt, /var/cache/libvirt and /var/log/swtpm, and `frontEnds` (a
/// directory with swtpm, swtpm_setup, swtpm_ioctl) first in its PATH, or none for
/// the real swtpm. ``stop()`` destroys its domains and ends every process in its
/// namespace; the namespace and its mounts go with them.
public final class LibvirtDaemon: @unchecked Sendable {
    public let root: String
    public let frontEnds: String?
    public let listenPort: UInt16?
    /// A directory on tmpfs (under /dev/shm) mounted over /run/guestvault inside the
    /// namespace, where the domains' `<nvram>` files live (docs/LIBVIRT.md): each daemon
    /// gets its own, as two hosts would.
    public let guestVaultRun: String?
    /// qemu.conf settings that replace the harness's (for example `user` and `group`:
    /// QEMU as `libvirt-qemu`, as on a host with libvirt's DAC model).
    public let qemuSettings: [String: String]
    private var process: Process?
    private var namespace: String?

    /// - Parameters:
    ///   - root: a fresh directory for the daemon's private directories.
    ///   - listenPort: a TCP port to listen on (for the destination of a migration).
    ///   - guestVaultRun: a directory on tmpfs to mount over /run/guestvault.
    public init(root: String, frontEnds: String?, listenPort: UInt16? = nil, guestVaultRun: String? = nil, qemuSettings: [String: String] = [:]) {
        self.qemuSettings = qemuSettings
        self.root = root
        self.frontEnds = frontEnds
        self.listenPort = listenPort
        self.guestVaultRun = guestVaultRun
    }

    /// The private directory that stands in for `path` inside the namespace.
    public func hostPath(_ path: String) -> String {
        if let guestVaultRun, path == "/run/guestvault" || path.hasPrefix("/run/guestvault/") {
            return guestVaultRun + path.dropFirst("/run/guestvault".count)
        }
        for (name, mounted) in Self.mounts where path == mounted || path.hasPrefix(mounted + "/") {
            return root + "/" + name + path.dropFirst(mounted.count)
        }
        return path
    }

    static let mounts = [("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"),
                         ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt"), ("swtpmlog", "/var/log/swtpm")]

    public var uri: String { "qemu+unix:///system?socket=\(root)/run/libvirt-sock" }

    public func start() throws {
        for (name, _) in Self.mounts {
            try FileManager.default.createDirectory(atPath: "\(root)/\(name)", withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o755])
        }
        var settings = ["user": "\"root\"", "group": "\"root\"", "swtpm_user": "\"root\"", "swtpm_group": "\"root\"",
                        "stdio_handler": "\"file\"", "cgroup_controllers": "[ ]", "namespaces": "[ ]",
                        "security_driver": "\"none\"", "dynamic_ownership": "0", "remember_owner": "0"]
        for (key, value) in qemuSettings { settings[key] = value }
        let qemu = settings.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: "\n") + "\n"
        var daemon = "auth_unix_rw = \"none\"\nhost_uuid = \"\(UUID().uuidString.lowercased())\"\n"
        if listenPort != nil {
            daemon += "listen_tcp = 1\nlisten_tls = 0\nauth_tcp = \"none\"\nlisten_addr = \"127.0.0.1\"\ntcp_port = \"\(listenPort!)\"\n"
        }
        try qemu.write(toFile: "\(root)/etc/qemu.conf", atomically: true, encoding: .utf8)
        try daemon.write(toFile: "\(root)/etc/libvirtd.conf", atomically: true, encoding: .utf8)
        var script = "set -e\n"
        for (name, mounted) in Self.mounts {
            script += "mkdir -p \(mounted)\nmount --bind \(root)/\(name) \(mounted)\n"
        }
        if let guestVaultRun { script += "mkdir -p /run/guestvault\nmount --bind \(guestVaultRun) /run/guestvault\n" }
        let path = (frontEnds.map { $0 + ":" } ?? "") + "/usr/sbin:/usr/bin:/sbin:/bin"
        script += "exec env -i PATH=\(path) HOME=/root libvirtd \(listenPort != nil ? "--listen " : "")--pid-file \(root)/libvirtd.pid\n"
        try script.write(toFile: "\(root)/start.sh", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-m", "--propagation", "private", "/bin/bash", "\(root)/start.sh"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = "\(root)/libvirtd.out"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        self.process = process
        guard waitUntil(attempts: 300, interval: 50_000, { (try? self.virsh(["version"]).status) == 0 || !process.isRunning }),
              process.isRunning else {
            throw LibvirtHarnessError(message: "libvirtd did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(process.processIdentifier)/ns/mnt")
    }

    /// Runs virsh against this daemon.
    @discardableResult
    public func virsh(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess("/usr/bin/virsh", ["-c", uri] + arguments)
    }

    /// Runs virsh and throws with its error output unless it succeeds.
    @discardableResult
    public func virshOK(_ arguments: [String]) throws -> String {
        let result = try virsh(arguments)
        guard result.status == 0 else {
            throw LibvirtHarnessError(message: "virsh \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.stderr)")
        }
        return result.stdout
    }

    /// Destroys every running domain, ends libvirtd and every process left in its mount
    /// namespace (QEMU, swtpm), and waits for them.
    public func stop() {
        if let names = try? virsh(["list", "--name"]).stdout {
            for name in names.split(separator: "\n") where !name.isEmpty { _ = try? virsh(["destroy", String(name)]) }
        }
        guard let process else { return }
        // SIGKILL: a child of the test process starts with its signal mask, in which
        // SIGTERM is blocked; the domains are destroyed already.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        if let namespace { Self.killAll(inNamespace: namespace) }
        self.process = nil
    }

    static func killAll(inNamespace namespace: String) {
        for _ in 0..<50 {
            let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/ns/mnt")) == namespace
            }
            if pids.isEmpty { return }
            for pid in pids { kill(pid, SIGKILL) }
            usleep(100_000)
        }
    }

    deinit { stop() }
}

public struct LibvirtHarnessError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
