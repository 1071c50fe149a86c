#!/usr/bin/env python3
"""Checks Vectors/formats/transfer/transcript-*.json against docs/TRANSFER.md.

An independent receiver of the transfer protocol, written from docs/TRANSFER.md (and
docs/FORMAT.md, docs/KEYS.md for the container it receives) on pyca/cryptography and
hashlib. For each vector it derives the keys from the fixed inputs, checks both hellos,
opens every sender frame in order (header rules, sequence numbers, AES-256-GCM with the
header as associated data), follows the receiver's states, checks the transcript and the
prefix digest in FINAL, checks that the DEK in KEY unwraps from the container's vault slot
and authenticates its last commit, and re-seals the receiver's ACK and DONE frames to
compare them byte for byte.

Run: python3 Vectors/tools/check_transfer_vectors.py [FILE.json ...]
Exit status 0 when every vector checks.
"""
import glob, hashlib, hmac, json, os, struct, sys, uuid
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

FORMATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "formats")

# docs/TRANSFER.md §2.1, §3.1, §4.1
HELLO_SIZE = 140
MAGIC = b"GVTX"
SENDER, RECEIVER = 1, 2
MODES = {"recipient": 1, "psk": 2}
PSK_LABEL = b"GuestVault v1 psk id"
INFO = b"GuestVault v1 transfer"
TRANSFER_ID_LABEL = b"GuestVault v1 transfer id"
HEADER = 16
TAG = 16
MAX_BODY = (4 << 20) + 16
MANIFEST, KEY, DATA, FINAL, ACK, DONE, ERROR = 1, 2, 3, 4, 5, 6, 7
NAMES = {MANIFEST: "MANIFEST", KEY: "KEY", DATA: "DATA", FINAL: "FINAL", ACK: "ACK", DONE: "DONE", ERROR: "ERROR"}
ACK_EVERY = 64 << 20


class Refused(Exception):
    """A check of docs/TRANSFER.md failed; the code names the TransferError it maps to."""
    def __init__(self, code, reason):
        super().__init__(f"{code}: {reason}")
        self.code = code


def u64(b):
    return struct.unpack(">Q", bytes(b))[0]


def raw_public(private):
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519(private_bytes, public_bytes):
    shared = X25519PrivateKey.from_private_bytes(private_bytes).exchange(X25519PublicKey.from_public_bytes(public_bytes))
    if shared == bytes(32):
        raise Refused("keys", "small-order peer key")
    return shared


# docs/KEYS.md §1 and docs/FORMAT.md §4: SP 800-108 counter mode, HMAC-SHA256, one block.
def kdf_block(key, label, context):
    return hmac.new(key, struct.pack(">I", 1) + label + b"\x00" + context + struct.pack(">I", 256), hashlib.sha256).digest()


def parse_hello(b):
    """docs/TRANSFER.md §2.1 and the checks of §2.2 (1-4)."""
    if len(b) != HELLO_SIZE or b[0:4] != MAGIC:
        raise Refused("protocolMismatch", "bad hello")
    if struct.unpack(">H", b[4:6])[0] != 1:
        raise Refused("protocolMismatch", "version")
    if b[6] not in (SENDER, RECEIVER) or b[7] not in (1, 2):
        raise Refused("protocolMismatch", "role or mode")
    if b[136:140] != bytes(4):
        raise Refused("protocolMismatch", "capabilities")
    carries_sender_key = b[6] == SENDER and b[7] == 1
    if carries_sender_key == (b[104:136] == bytes(32)):
        raise Refused("protocolMismatch", "sender key field")
    return {"role": b[6], "mode": b[7], "ephemeral": b[8:40], "random": b[40:72], "keyID": b[72:104], "senderKey": b[104:136]}


def header(length, type_, sequence):
    return struct.pack(">IB3xQ", length, type_, sequence)


def seal(key, type_, sequence, payload):
    """docs/TRANSFER.md §3.1: one whole frame."""
    h = header(len(payload) + TAG, type_, sequence)
    return h + AESGCM(key).encrypt(bytes(4) + struct.pack(">Q", sequence), payload, h)


class FrameReader:
    """docs/TRANSFER.md §3.2 and §3.3: one direction, as its reader sees it."""
    def __init__(self, key, handshake_hash):
        self.key, self.buffer, self.sequence = key, b"", 0
        self.transcript = hashlib.sha256(handshake_hash)
        self.transcript_before_last = None

    def feed(self, data):
        self.buffer += data

    def next(self):
        if len(self.buffer) < HEADER:
            return None
        h = self.buffer[:HEADER]
        n, type_, flags, zero, sequence = struct.unpack(">IBBHQ", h)
        if n < TAG or n > MAX_BODY:
            raise Refused("tooLarge", f"body length {n}")
        if type_ not in NAMES:
            raise Refused("unexpectedFrame", f"type {type_}")
        if flags != 0 or zero != 0:
            raise Refused("unexpectedFrame", "flags or zero bytes")
        if len(self.buffer) < HEADER + n:
            return None
        body = self.buffer[HEADER:HEADER + n]
        self.buffer = self.buffer[HEADER + n:]
        if sequence != self.sequence:
            raise Refused("sequence", f"frame {sequence} where {self.sequence} was due")
        try:
            payload = AESGCM(self.key).decrypt(bytes(4) + struct.pack(">Q", sequence), body, h)
        except Exception:
            raise Refused("authenticationFailed", f"frame {sequence}")
        self.transcript_before_last = self.transcript.digest()
        self.transcript.update(h + body[-TAG:])   # §3.3: each frame's header and tag
        self.sequence += 1
        return type_, payload


def container_facts(file, dek, root_key, receiver_root):
    """docs/FORMAT.md §2, §3, §6 and docs/KEYS.md §4: the superblock, the last commit, its
    slots; checks that the DEK unwraps from the vault slot of `root_key` and authenticates
    the last commit; says whether `receiver_root`'s vault already has a slot."""
    superblock = file[0:64]
    assert superblock[0:8] == b"GVSTATE\x00", "superblock magic"
    assert hashlib.sha256(superblock[0:56]).digest()[:8] == superblock[56:64], "superblock checksum"
    container_id, vm = superblock[16:32], superblock[32:48]
    offset, last = 4096, None
    while offset + 32 <= len(file) and file[offset:offset + 4] == b"GVLR":
        kind, length = file[offset + 4], u64(file[offset + 8:offset + 16])
        if kind == 3:
            last = (offset, length)
        offset += 32 + length
    assert offset == len(file), "the records end where the file ends (the sent bytes are [0, log end))"
    assert last is not None, "a commit record"
    at, length = last
    record_header, body = file[at:at + 32], file[at + 32:at + 32 + length]
    generation = u64(body[0:8])
    slot_length = struct.unpack(">H", body[28:30])[0]
    slots = body[30:30 + slot_length]
    found, own = [], False
    receiver_id = kdf_block(receiver_root, b"GuestVault v1 root key id", b"")[:16]
    source_id = kdf_block(root_key, b"GuestVault v1 root key id", b"")[:16]
    p = 1
    for _ in range(slots[0]):
        kind, body_length = slots[p], struct.unpack(">H", slots[p + 2:p + 4])[0]
        slot = slots[p + 4:p + 4 + body_length]
        p += 4 + body_length
        if kind == 1:
            key_id, epoch, wrapped = slot[0:16], struct.unpack(">I", slot[16:20])[0], slot[20:60]
            own = own or key_id == receiver_id
            if key_id == source_id:
                kek = kdf_block(root_key, b"GuestVault v1 KEK", vm + struct.pack(">I", epoch))
                found.append(aes_key_unwrap_with_padding(kek, wrapped))
    assert found and found[0] == dek, "the DEK in the KEY frame unwraps from the source vault's slot"
    manifest_key = kdf_block(dek, b"GuestVault v1 manifest", container_id)
    expected = hmac.new(manifest_key, superblock + record_header[0:16] + body[:-32], hashlib.sha256).digest()
    assert hmac.compare_digest(expected, body[-32:]), "the DEK authenticates the last commit"
    return {"containerID": container_id, "vm": vm, "generation": generation, "receiverHasSlot": own}


def check(path):
    v = json.load(open(path))
    c, a, derived = v["container"], v["authentication"], v["derived"]
    h = bytes.fromhex
    file = open(os.path.join(FORMATS, c["file"]), "rb").read()
    assert len(file) == c["length"] and hashlib.sha256(file).hexdigest() == c["sha256"], "the container file"
    messages = v["messages"]
    mode = MODES[a["mode"]]

    # §2.1: the hellos the fixed inputs give, and the checks of §2.2 at the receiver.
    e_s, e_r = h(v["sender"]["ephemeralPrivate"]), h(v["receiver"]["ephemeralPrivate"])
    E_s, E_r = raw_public(X25519PrivateKey.from_private_bytes(e_s)), raw_public(X25519PrivateKey.from_private_bytes(e_r))
    assert E_s.hex() == v["sender"]["ephemeralPublic"] and E_r.hex() == v["receiver"]["ephemeralPublic"], "ephemeral public keys"
    if mode == 1:
        r = h(a["recipientPrivate"])
        R = raw_public(X25519PrivateKey.from_private_bytes(r))
        assert R.hex() == a["recipientPublic"], "recipient public key"
        s_priv = h(a["senderPrivate"])
        S = raw_public(X25519PrivateKey.from_private_bytes(s_priv))
        assert S.hex() == a["senderPublic"], "sender public key"
        accepted = [S]  # the receiver's --from list
        key_id = hashlib.sha256(R).digest()
    else:
        psk = h(a["psk"])
        key_id = hashlib.sha256(PSK_LABEL + psk).digest()
    assert key_id.hex() == a["keyID"], "key id"
    hello_s, hello_r = h(messages[0]["bytes"]), h(messages[1]["bytes"])
    assert messages[0]["direction"] == "sender->receiver" and messages[1]["direction"] == "receiver->sender"
    for hello, role, E, end in ((hello_s, SENDER, E_s, v["sender"]), (hello_r, RECEIVER, E_r, v["receiver"])):
        sender_field = S if (role == SENDER and mode == 1) else bytes(32)
        expected = MAGIC + struct.pack(">HBB", 1, role, mode) + E + h(end["random"]) + key_id + sender_field + bytes(4)
        assert hello == expected, f"the {'sender' if role == SENDER else 'receiver'}'s hello"
    theirs = parse_hello(hello_s)
    if theirs["role"] == RECEIVER:
        raise Refused("protocolMismatch", "both ends are receivers")
    if theirs["mode"] != mode:
        raise Refused("keys", "mode")
    if not hmac.compare_digest(theirs["keyID"], key_id):
        raise Refused("keys", "key id")
    if mode == 1 and theirs["senderKey"] not in accepted:
        raise Refused("keys", "a sender this receiver does not accept")

    # §2.3, computed the receiver's way.
    first = x25519(r, theirs["ephemeral"]) + x25519(r, theirs["senderKey"]) if mode == 1 else psk
    if mode == 1:
        assert first == x25519(e_s, R) + x25519(s_priv, R), "X25519(r, E_s) || X25519(r, S) = X25519(e_s, R) || X25519(s, R)"
    ee = x25519(e_r, theirs["ephemeral"])
    H = hashlib.sha256(hello_s + hello_r).digest()
    okm = HKDF(hashes.SHA256(), 64, salt=H, info=INFO).derive(first + ee)
    k_sr, k_rs = okm[:32], okm[32:]
    for name, value in (("firstSecret", first), ("ephemeralShared", ee), ("handshakeHash", H),
                        ("senderToReceiverKey", k_sr), ("receiverToSenderKey", k_rs)):
        assert derived[name] == value.hex(), name

    # §4.4 and §4.5: the receiver's states, over the sender's bytes in order; the
    # receiver's own frames are made here and compared with the recorded ones.
    reader = FrameReader(k_sr, H)
    replies = [m for m in messages[2:] if m["direction"] == "receiver->sender"]
    sent_sequence = 0
    facts = None
    state, manifest, dek, received, frames = "WAIT-MANIFEST", None, None, b"", 0

    def reply(type_, payload):
        nonlocal sent_sequence
        frame = seal(k_rs, type_, sent_sequence, payload)
        recorded = replies.pop(0) if replies else None
        assert recorded is not None, f"the receiver's {NAMES[type_]} is recorded"
        assert recorded["type"] == NAMES[type_] and recorded["sequence"] == sent_sequence, f"reply {NAMES[type_]}"
        assert recorded["payload"] == payload.hex(), f"{NAMES[type_]} payload"
        assert recorded["bytes"] == frame.hex(), f"{NAMES[type_]} frame bytes"
        sent_sequence += 1

    for m in messages[2:]:
        if m["direction"] != "sender->receiver":
            continue
        reader.feed(h(m["bytes"]))
        got = reader.next()
        assert got is not None and not reader.buffer, f"message {m['index']} is one whole frame"
        type_, payload = got
        frames += 1
        assert m["type"] == NAMES[type_] and m["sequence"] == reader.sequence - 1, f"message {m['index']}: type, sequence"
        assert m["payload"] == payload.hex(), f"message {m['index']}: payload"
        assert m["transcript"] == reader.transcript.digest().hex(), f"message {m['index']}: transcript after it"
        if state == "WAIT-MANIFEST":
            if type_ != MANIFEST or len(payload) != 64:
                raise Refused("unexpectedFrame", "expected MANIFEST")
            manifest = {"transferID": payload[0:16], "vm": payload[16:32], "containerID": payload[32:48],
                        "generation": u64(payload[48:56]), "length": u64(payload[56:64])}
            if manifest["length"] < 4096:
                raise Refused("unexpectedFrame", "too short")
            reply(ACK, struct.pack(">Q", 0))   # a new transfer: nothing held yet
            state = "WAIT-KEY"
        elif state == "WAIT-KEY":
            if type_ != KEY or len(payload) != 32:
                raise Refused("unexpectedFrame", "expected KEY")
            dek = payload
            state = "DATA"
        elif type_ == DATA:
            if len(payload) <= 8:
                raise Refused("unexpectedFrame", "empty DATA")
            at = u64(payload[0:8])
            if at != len(received) or at + len(payload) - 8 > manifest["length"]:
                raise Refused("unexpectedFrame", f"DATA at {at}")
            received += payload[8:]
            assert len(received) < ACK_EVERY, "no ACK is due in a vector this small"
        elif type_ == FINAL:
            if len(payload) != 72:
                raise Refused("unexpectedFrame", "FINAL size")
            if u64(payload[0:8]) != manifest["length"] or len(received) != manifest["length"]:
                raise Refused("integrity", "FINAL after a short file")
            if not hmac.compare_digest(payload[40:72], reader.transcript_before_last):
                raise Refused("integrity", "transcript")
            # A new transfer: the receiver had no bytes before this session.
            if not hmac.compare_digest(payload[8:40], hashlib.sha256(b"").digest()):
                raise Refused("integrity", "prefix digest")
            assert payload[40:72].hex() == derived["finalTranscript"] and payload[8:40].hex() == derived["prefixSHA256"]
            # §4.7: the container must be the one the manifest names, and open with the DEK.
            assert received == file, "the received bytes are the container file"
            facts = container_facts(received, dek, h(c["rootKey"]), h(v["receiverCommit"]["vaultRootKey"]))
            if facts["vm"] != manifest["vm"]:
                raise Refused("integrity", "another VM")
            generation = facts["generation"] + (0 if facts["receiverHasSlot"] else 1)
            assert generation == v["receiverCommit"]["generation"], "the committed generation"
            reply(DONE, struct.pack(">Q", generation))
            state = "RECEIVED"
        elif type_ == ERROR:
            raise Refused("peer", payload.decode("utf-8", "replace"))
        else:
            raise Refused("unexpectedFrame", f"{NAMES[type_]} during the data")
    assert state == "RECEIVED" and not replies, "the exchange ends with DONE"

    # What the manifest says, against the file (GuestVault's receiver checks the VM only).
    assert manifest["vm"] == uuid.UUID(c["vm"]).bytes == facts["vm"], "manifest VM"
    assert manifest["containerID"] == facts["containerID"] and manifest["containerID"].hex() == c["containerID"], "manifest container id"
    assert manifest["generation"] == facts["generation"] == c["generation"], "manifest generation"
    assert manifest["length"] == len(file), "manifest length"
    assert dek.hex() == c["dek"], "the KEY frame carries the container's DEK"
    # §4.6: the stable transfer id.
    transfer_id = hashlib.sha256(TRANSFER_ID_LABEL + facts["containerID"] + struct.pack(">QQ", facts["generation"], len(file))).digest()[:16]
    assert manifest["transferID"] == transfer_id and transfer_id.hex() == derived["transferID"], "transfer id"
    return f"{len(messages)} messages, {frames} sender frames opened, FINAL transcript {derived['finalTranscript'][:16]}…, DONE({v['receiverCommit']['generation']})"


def main():
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(FORMATS, "transfer", "transcript-*.json")))
    if not paths:
        print("no vectors found", file=sys.stderr)
        return 1
    failed = 0
    for path in paths:
        name = os.path.relpath(path, os.path.join(FORMATS, ".."))
        try:
            print(f"ok   {name}: {check(path)}")
        except (AssertionError, Refused) as error:
            failed += 1
            print(f"FAIL {name}: {error}")
    print(f"{len(paths) - failed} of {len(paths)} transfer vectors check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
