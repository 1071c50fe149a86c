#!/usr/bin/env python3
"""Writes Vectors/formats/migration-blob/sealed-permanent.json: a sealed migration blob
(docs/MIGRATION-BLOB.md) computed here, independently of the Swift code, with Python's
`cryptography` (HKDF-SHA256, AES-256-GCM). The Swift test seals the same inputs and must
produce the same bytes, and opens these bytes."""
import json, struct, sys
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

dek = bytes(range(0x20, 0x40))
vm = bytes.fromhex("6f1d2c3b4a594e688d7c0b1a2f3e4d5c")
container = bytes.fromhex("00112233445566778899aabbccddeeff")
blob_type = 1  # permanent
generation = 42
blob_set = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
nonce = bytes.fromhex("000102030405060708090a0b")
payload = b"\x00\x02" + b"libtpms permanent state (example)" + bytes(range(16))

def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(ikm)

root = hkdf(dek, container, b"GuestVault v1 tpm migration root")
info = (b"GuestVault v1 tpm migration blob" + b"\x00" + vm + container
        + struct.pack(">HQ", blob_type, generation) + blob_set)
key = hkdf(root, b"", info)

total = 10 + 6 + 80 + len(payload) + 16
head = struct.pack(">BBHHI", 2, 1, 10, 0x16, total)
head += struct.pack(">HI", 5, total - 16)
head += b"GVMB" + struct.pack(">HH", 1, blob_type) + vm + container + struct.pack(">Q", generation) + blob_set + nonce
head += struct.pack(">I", len(payload))
sealed = head + AESGCM(key).encrypt(nonce, payload, head)
assert len(sealed) == total

vector = {
    "source": "Vectors/tools/make_migration_blob_vector.py (Python cryptography, independent of the Swift code)",
    "format": "docs/MIGRATION-BLOB.md",
    "dek": dek.hex(), "vm": vm.hex(), "containerID": container.hex(), "blobType": blob_type,
    "generation": generation, "blobSetID": blob_set.hex(), "nonce": nonce.hex(), "payload": payload.hex(),
    "rootKey": root.hex(), "blobKey": key.hex(), "aadByteCount": len(head), "sealed": sealed.hex(),
}
json.dump(vector, open(sys.argv[1], "w"), indent=2)
open(sys.argv[1], "a").write("\n")
