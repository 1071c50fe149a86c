import GuestVaultCore
/// swtpm's command lines, read as getopt_long reads them: `--name value`, `--name=value`,
/// short options (`-s`), and swtpm's `key=value,key=value` option values. Every flag
/// the front end does not know is an error that names it.
struct FrontEndArguments {
    /// The options in order, with their values (nil for a flag).
    private(set) var options: [(name: String, value: String?)] = []
    /// Words that are not options (swtpm's `socket`).
    private(set) var positionals: [String] = []

    /// - Parameters:
    ///   - valued: long names (without `--`) that take a value.
    ///   - flags: long names that take none.
    ///   - short: short letters mapped to the long name they stand for.
    init(_ arguments: [String], program: String, valued: Set<String>, flags: Set<String>, short: [Character: String] = [:]) throws {
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if word.hasPrefix("--") && word.count > 2 {
                let (name, inline) = Self.splitLongOption(word)
                if valued.contains(name) {
                    if let inline {
                        options.append((name, inline))
                    } else {
                        guard index < arguments.count else { throw FrontEndError.usage(program, "option --\(name) needs a value") }
                        options.append((name, arguments[index]))
                        index += 1
                    }
                } else if flags.contains(name) {
                    guard inline == nil else { throw FrontEndError.usage(program, "option --\(name) takes no value") }
                    options.append((name, nil))
                } else {
                    throw FrontEndError(.frontEndUsage, "\(program): option --\(name) is not supported by GuestVault's \(program) front end (docs/LIBVIRT.md lists the supported options)")
                }
            } else if word.hasPrefix("-") && word.count > 1 && word != "-" {
                for letter in word.dropFirst() {
                    guard let name = short[letter] else {
                        throw FrontEndError(.frontEndUsage, "\(program): option -\(letter) is not supported by GuestVault's \(program) front end (docs/LIBVIRT.md lists the supported options)")
                    }
                    if valued.contains(name) {
                        guard index < arguments.count else { throw FrontEndError.usage(program, "option -\(letter) needs a value") }
                        options.append((name, arguments[index]))
                        index += 1
                    } else {
                        options.append((name, nil))
                    }
                }
            } else {
                positionals.append(word)
            }
        }
    }

    /// `--name=value` split at its first `=` (the name without `--`); `--name` alone has no
    /// inline value. Shared with serve's quick parser.
    static func splitLongOption(_ word: String) -> (name: String, inline: String?) {
        let body = word.dropFirst(2)
        guard let equals = body.firstIndex(of: "=") else { return (String(body), nil) }
        return (String(body[..<equals]), String(body[body.index(after: equals)...]))
    }

    func has(_ name: String) -> Bool { options.contains { $0.name == name } }

    /// The last value given for `name` (getopt's last one wins, as in swtpm).
    func value(_ name: String) -> String? { options.last { $0.name == name }?.value }
}

/// swtpm's option values: `dir=/path,mode=0600`, `pwdfd=5,mode=aes-256-cbc`,
/// `release-lock-outgoing,incoming`.
struct KeyValueOption {
    let option: String
    private(set) var pairs: [(key: String, value: String?)] = []

    init(_ text: String, option: String, program: String, allowed: Set<String>) throws {
        self.option = option
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            let key: String
            let value: String?
            if let equals = part.firstIndex(of: "=") {
                key = String(part[..<equals])
                value = String(part[part.index(after: equals)...])
            } else {
                key = String(part)
                value = nil
            }
            guard allowed.contains(key) else {
                throw FrontEndError(.frontEndUsage, "\(program): \(option) \(key) is not supported by GuestVault's \(program) front end (supported: \(allowed.sorted().joined(separator: ", ")))")
            }
            pairs.append((key, value))
        }
    }

    subscript(_ key: String) -> String? { pairs.last { $0.key == key }?.value }
    func has(_ key: String) -> Bool { pairs.contains { $0.key == key } }

    /// A value that must be there.
    func required(_ key: String, program: String) throws -> String {
        guard let value = self[key], !value.isEmpty else {
            throw FrontEndError.usage(program, "\(option) needs \(key)=...")
        }
        return value
    }
}
