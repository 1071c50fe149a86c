public import GuestVaultSystem

extension StreamSocket: ByteChannel {}
