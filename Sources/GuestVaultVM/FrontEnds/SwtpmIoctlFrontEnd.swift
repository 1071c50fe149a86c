import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM

/// `swtpm_ioctl`: sends one control command to a running TPM server (GuestVault's or
/// swtpm's) over its control channel, as swtpm_ioctl 0.7 does.
enum SwtpmIoctlFrontEnd {
    static let program = "swtpm_ioctl"

    static let valued: Set<String> = ["unix", "tcp", "locality"]
    static let flags: Set<String> = ["shutdown", "init", "stop", "store-volatile", "capabilities", "established", "help", "version"]
    static let short: [Character: String] = [
        "s": "shutdown", "i": "init", "v": "store-volatile", "c": "capabilities", "e": "established", "h": "help", "l": "locality",
    ]

    static func run(_ arguments: [String]) throws -> Int32 {
        let args = try FrontEndArguments(arguments, program: program, valued: valued, flags: flags, short: short)
        if args.has("help") { print(help); return 0 }
        if args.has("version") { print("TPM emulator control tool version 0.7.1 (GuestVault)"); return 0 }
        let address: StreamSocket.Address
        if let path = args.value("unix") {
            address = .unix(path: path)
        } else if let text = args.value("tcp") {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 2, let port = UInt16(parts.last!) else { throw FrontEndError.usage(program, "--tcp \(text) is not HOST:PORT") }
            address = .tcp(host: parts.dropLast().joined(separator: ":"), port: port)
        } else if let path = args.positionals.last {
            address = .unix(path: path)   // swtpm_ioctl's CUSE device argument: not a socket here
        } else {
            throw FrontEndError.usage(program, "give --unix PATH or --tcp HOST:PORT")
        }
        let commands = args.options.filter { !["unix", "tcp"].contains($0.name) }
        guard commands.count == 1, let command = commands.first else {
            throw FrontEndError.usage(program, "give exactly one command (-s, -i, --stop, -v, -c, -e, -l N)")
        }
        var request: [UInt8]
        switch command.name {
        case "shutdown": request = ControlCommand.shutdown.rawValue.bigEndianBytes
        case "init": request = ControlCommand.initialize.rawValue.bigEndianBytes + UInt32(0).bigEndianBytes
        case "stop": request = ControlCommand.stop.rawValue.bigEndianBytes
        case "store-volatile": request = ControlCommand.storeVolatile.rawValue.bigEndianBytes
        case "capabilities": request = ControlCommand.getCapability.rawValue.bigEndianBytes
        case "established": request = ControlCommand.getTPMEstablished.rawValue.bigEndianBytes
        case "locality":
            guard let value = command.value.flatMap(UInt8.init), value <= 4 else { throw FrontEndError.usage(program, "-l needs a locality 0-4") }
            request = ControlCommand.setLocality.rawValue.bigEndianBytes + [value]
        default: throw FrontEndError.usage(program, "option --\(command.name) is not a command")
        }
        let socket = try StreamSocket.connect(address)
        defer { socket.close() }
        try socket.send(request, timeout: 10_000)
        // CMD_GET_CAPABILITY answers with the 8-byte capability set alone; the others
        // with a 4-byte TPM result first.
        let expected = command.name == "capabilities" ? 8 : (command.name == "established" ? 5 : 4)
        var reply: [UInt8] = []
        while reply.count < expected {
            let part = try socket.receive()
            guard !part.isEmpty else { break }
            reply += part
        }
        guard reply.count >= expected, let result = UInt32(bigEndianBytes: Array(reply[0..<4])) else {
            throw FrontEndError(.frontEndState, "\(program): \(address) closed the connection without a whole reply")
        }
        if command.name == "capabilities" {
            print("ptm capability is 0x\(String(UInt64(bigEndianBytes: Array(reply[0..<8])) ?? 0, radix: 16))")
            return 0
        }
        guard result == 0 else {
            throw FrontEndError(.frontEndState, "\(program): TPM result from \(command.name): 0x\(String(result, radix: 16))")
        }
        switch command.name {
        case "established" where reply.count >= 5:
            print("tpmEstablished is \(reply[4])")
        default: break
        }
        return 0
    }

    static let help = """
        Usage: swtpm_ioctl --unix PATH | --tcp HOST:PORT  -s | -i | --stop | -v | -c | -e | -l N
        GuestVault's swtpm_ioctl: one control command to a running vTPM server.
        """
}
