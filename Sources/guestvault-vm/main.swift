// guestvault-vm: the per-VM process (`serve` and the swtpm front ends) on its own.
import GuestVaultVM

VMProcess.main()
