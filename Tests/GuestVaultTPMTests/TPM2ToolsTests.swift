import Foundation
import GuestVaultSystem
import Testing

/// tpm2-tools 5.4 over tpm2-tss' swtpm TCTI against `guestvault serve`.
@Suite(.enabled(if: Peers.tpm2Tools, "tpm2-tools is not installed (apt install tpm2-tools)"))
struct TPM2ToolsTests {
    func tool(_ server: ServedTPM, _ name: String, _ arguments: [String], input: Data? = nil) throws -> Run.Output {
        let output = try Run.program(Run.which(name) ?? name, arguments, environment: server.tcti, input: input)
        #expect(output.status == 0, "\(name) \(arguments.joined(separator: " ")): \(output.stderr)")
        return output
    }

    @Test func toolsWorkAndNVSurvivesARestartFromTheSealedContainer() throws {
        let dir = TemporaryDirectory("tpm2tools")
        let vault = dir.file("vault"), state = dir.file("vm.state")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", state])
        #expect(created.status == 0, "\(created.stderr)")

        let nvData = Array("GuestVault NV data survives!".utf8) + [UInt8](repeating: 0x5A, count: 4)
        let pcrValue: String
        do {
            let server = try ServedTPM(vault: vault, state: state)
            let random = try tool(server, "tpm2_getrandom", ["8", "--hex"])
            #expect(random.text.count == 16)
            _ = try tool(server, "tpm2_createprimary", ["-C", "o", "-G", "rsa", "-c", dir.file("rsa.ctx")])
            _ = try tool(server, "tpm2_createprimary", ["-C", "o", "-G", "ecc", "-c", dir.file("ecc.ctx")])
            _ = try tool(server, "tpm2_flushcontext", ["-t"])
            _ = try tool(server, "tpm2_pcrextend", ["16:sha256=" + String(repeating: "ab", count: 32)])
            pcrValue = try tool(server, "tpm2_pcrread", ["sha256:16"]).text
            #expect(!pcrValue.contains("0x0000000000000000000000000000000000000000000000000000000000000000"))
            _ = try tool(server, "tpm2_nvdefine", ["0x1500016", "-C", "o", "-s", "\(nvData.count)", "-a", "ownerread|ownerwrite"])
            _ = try tool(server, "tpm2_nvwrite", ["0x1500016", "-C", "o", "-i", "-"], input: Data(nvData))
            #expect(try tool(server, "tpm2_nvread", ["0x1500016", "-C", "o", "-s", "\(nvData.count)"]).stdout == Data(nvData))
            #expect(server.terminate() == 0, "SIGTERM stores the volatile state and exits 0")
        }
        // A new process from the sealed container: same NV, and the PCR resumed from the
        // stored volatile state.
        let server = try ServedTPM(vault: vault, state: state)
        #expect(try tool(server, "tpm2_nvread", ["0x1500016", "-C", "o", "-s", "\(nvData.count)"]).stdout == Data(nvData))
        #expect(try tool(server, "tpm2_pcrread", ["sha256:16"]).text == pcrValue)

        // The persisted EKs match the public keys in their certificates.
        if Peers.openssl {
            for (handle, index) in [("0x81010001", "0x01c00002"), ("0x81010002", "0x01c0000a")] {
                _ = try tool(server, "tpm2_readpublic", ["-c", handle, "-f", "pem", "-o", dir.file("ek-\(handle).pem")])
                let certificate = try tool(server, "tpm2_nvread", [index, "-C", "o"]).stdout
                try certificate.write(to: URL(fileURLWithPath: dir.file("ek-\(handle).der")))
                let fromCertificate = try Run.program(Run.which("openssl")!, ["x509", "-inform", "der", "-in", dir.file("ek-\(handle).der"), "-noout", "-pubkey"])
                #expect(fromCertificate.status == 0, "\(fromCertificate.stderr)")
                let fromTPM = try String(contentsOfFile: dir.file("ek-\(handle).pem"), encoding: .utf8)
                #expect(fromCertificate.text.trimmingCharacters(in: .whitespacesAndNewlines) == fromTPM.trimmingCharacters(in: .whitespacesAndNewlines),
                        "EK \(handle) and its certificate in \(index) hold the same public key")
            }
        }
        #expect(server.terminate() == 0)
    }
}
