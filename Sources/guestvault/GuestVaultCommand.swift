import ArgumentParser
import GuestVaultCrypto

@main
struct GuestVaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guestvault",
        abstract: "Keep a VM's trusted-launch guest state (vTPM, UEFI variables, runtime state) sealed under per-VM keys.",
        discussion: """
            GuestVault seals each piece of a VM's guest state with AES-256-GCM under a key
            derived for that one VM from a key vault, and moves it between hosts in an
            encrypted, authenticated framing.

            Start with `guestvault demo` to see the whole flow on a temporary vault.
            A file vault is named with --vault DIR, or with the GUESTVAULT_VAULT
            environment variable.
            """,
        version: GuestVaultVersion.string,
        subcommands: [VaultCommand.self, Create.self, Inspect.self, List.self, Put.self, Get.self, Rekey.self, ImportSwtpm.self, ExportSwtpm.self, Serve.self, Send.self, Receive.self, BenchmarkCommand.self, Demo.self]
    )

    static func main() async {
        // Called as swtpm, swtpm_setup or swtpm_ioctl (libvirt, Proxmox): that front end.
        FrontEndDispatch.runIfCalledByName()
        await main(nil)
    }
}
