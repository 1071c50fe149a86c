public import GuestVaultCrypto

/// How the two ends authenticate (docs/TRANSFER.md §2).
public enum TransferAuthentication: Sendable {
    /// Sender side: the destination vault's X25519 recipient public key
    /// (`guestvault vault recipient` there), and this vault's own recipient key, which
    /// the receiver checks against the senders it accepts. Only the destination vault
    /// can read the transfer; only a holder of `sender` can send it.
    case toRecipient(X25519.PublicKey, sender: X25519.PrivateKey)
    /// Receiver side: this vault's recipient private key, and whose transfers to accept.
    case asRecipient(X25519.PrivateKey, accepting: AcceptedSenders)
    /// Both sides: a migration key both vaults hold (at least 32 bytes). Authenticates
    /// both ends to each other.
    case presharedKey(SecretBytes)
}

/// The senders a receiver in recipient mode accepts.
public enum AcceptedSenders: Sendable {
    /// Only these vaults' recipient public keys.
    case only([X25519.PublicKey])
    /// Any sender that proves a recipient key. It still proves one (the report names
    /// it), but anyone who can reach the listener can place a container here: a new
    /// container (a container id this vault has no counter for) of any VM the receiver
    /// accepts (`TransferPolicy.vms`), with a rollback counter of its own. It can never
    /// touch an existing local container or its counter (docs/TRANSFER.md §6).
    case anyone
}
