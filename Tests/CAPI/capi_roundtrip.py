#!/usr/bin/env python3
"""The basic round trip of the GuestVault C API through Python ctypes.

    capi_roundtrip.py LIBRARY DIR

LIBRARY is the installed libguestvault.so, DIR an empty directory. Prints one line
per check and "N passed, M failed"; exits 1 on any failure.
"""
import ctypes
import os
import sys

GV_OK, GV_E_USAGE, GV_E_NOT_FOUND, GV_E_KEYS, GV_E_INTEGRITY = 0, -2, -3, -7, -8
GV_OPEN_WRITE = 1
VM = "0d9c4b1a-7e35-4f60-8a2b-93c1d4e5f607"

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
P = ctypes.c_void_p
U8P = ctypes.POINTER(ctypes.c_uint8)


def bind(lib):
    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, list(argtypes)
        return f
    c = ctypes
    return {
        "version": fn("gv_version", c.c_char_p),
        "last": fn("gv_last_error_message", c.c_char_p),
        "free": fn("gv_buffer_free", None, P),
        "vault_create": fn("gv_vault_create_file", c.c_int, c.c_char_p, c.c_char_p, c.c_size_t, c.c_uint32, c.POINTER(P)),
        "vault_close": fn("gv_vault_close", c.c_int, P),
        "create": fn("gv_container_create", c.c_int, P, c.c_char_p, c.c_char_p, c.POINTER(P)),
        "open": fn("gv_container_open", c.c_int, P, c.c_char_p, c.c_uint32, c.POINTER(P)),
        "close": fn("gv_container_close", c.c_int, P),
        "put": fn("gv_container_put", c.c_int, P, c.c_char_p, c.c_char_p, c.c_size_t),
        "get": fn("gv_container_get", c.c_int, P, c.c_char_p, c.POINTER(U8P), c.POINTER(c.c_size_t)),
        "put_stream": fn("gv_container_put_stream", c.c_int, P, c.c_char_p, READ_FN, P),
        "get_stream": fn("gv_container_get_stream", c.c_int, P, c.c_char_p, WRITE_FN, P),
        "commit": fn("gv_container_commit", c.c_int, P, c.POINTER(c.c_uint64)),
        "generation": fn("gv_container_generation", c.c_int, P, c.POINTER(c.c_uint64)),
        "seal": fn("gv_blob_seal", c.c_int, P, c.c_char_p, c.c_char_p, c.c_char_p, c.c_size_t, c.POINTER(U8P), c.POINTER(c.c_size_t)),
        "unseal": fn("gv_blob_open", c.c_int, P, c.c_char_p, c.c_char_p, c.c_char_p, c.c_size_t, c.POINTER(U8P), c.POINTER(c.c_size_t)),
    }


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gv = bind(ctypes.CDLL(sys.argv[1]))
    directory = sys.argv[2]
    results = {"passed": 0, "failed": 0}

    def check(condition, what):
        key = "passed" if condition else "failed"
        results[key] += 1
        detail = "" if condition else " (last error: %s)" % gv["last"]().decode(errors="replace")
        print("%s - %s%s" % ("ok" if condition else "not ok", what, detail))

    def take(pointer, length):
        data = ctypes.string_at(pointer, length.value)
        gv["free"](pointer)
        return data

    check(len(gv["version"]()) > 0, "gv_version")
    vault, other = P(), P()
    check(gv["vault_create"](os.path.join(directory, "vault").encode(), None, 0, 0, ctypes.byref(vault)) == GV_OK, "create a vault")
    check(gv["vault_create"](os.path.join(directory, "other").encode(), None, 0, 0, ctypes.byref(other)) == GV_OK, "create another vault")
    state = os.path.join(directory, "py.state").encode()
    c = P()
    check(gv["create"](vault, state, VM.encode(), ctypes.byref(c)) == GV_OK, "create a container")
    blob = bytes(range(256)) * 64
    check(gv["put"](c, b"uefi.nvram", blob, len(blob)) == GV_OK, "put a blob")

    stream = bytes((i * 7 + 3) & 0xFF for i in range(3 << 20))
    position = [0]

    @READ_FN
    def reader(_context, buf, cap):
        n = min(cap, len(stream) - position[0])
        ctypes.memmove(buf, stream[position[0]:position[0] + n], n)
        position[0] += n
        return n

    check(gv["put_stream"](c, b"vm.runtime", reader, None) == GV_OK, "put a 3 MiB stream through a callback")
    generation = ctypes.c_uint64()
    check(gv["commit"](c, ctypes.byref(generation)) == GV_OK and generation.value == 2, "commit (generation 2)")
    check(gv["close"](c) == GV_OK, "close")

    c = P()
    check(gv["open"](vault, state, GV_OPEN_WRITE, ctypes.byref(c)) == GV_OK, "reopen")
    check(gv["generation"](c, ctypes.byref(generation)) == GV_OK and generation.value == 2, "generation after reopening")
    data, length = U8P(), ctypes.c_size_t()
    check(gv["get"](c, b"uefi.nvram", ctypes.byref(data), ctypes.byref(length)) == GV_OK and take(data, length) == blob,
          "the blob reads back")
    pieces = []

    @WRITE_FN
    def writer(_context, buf, n):
        pieces.append(ctypes.string_at(buf, n))
        return 0

    check(gv["get_stream"](c, b"vm.runtime", writer, None) == GV_OK and b"".join(pieces) == stream, "the stream reads back")
    status = gv["get"](c, b"missing", ctypes.byref(data), ctypes.byref(length))
    check(status == GV_E_NOT_FOUND and b"missing" in gv["last"](), "a missing entry is GV_E_NOT_FOUND with a message")
    check(gv["close"](c) == GV_OK, "close")
    check(gv["open"](other, state, 0, ctypes.byref(c)) == GV_E_KEYS, "another vault's key is GV_E_KEYS")
    check(gv["open"](None, state, 0, ctypes.byref(c)) == GV_E_USAGE, "no vault is GV_E_USAGE")

    sealed, sealed_length = U8P(), ctypes.c_size_t()
    check(gv["seal"](vault, VM.encode(), b"tpm.savestate", blob, len(blob), ctypes.byref(sealed), ctypes.byref(sealed_length)) == GV_OK,
          "seal a blob under the VM's key")
    sealed_bytes = take(sealed, sealed_length)
    check(gv["unseal"](vault, VM.encode(), b"tpm.savestate", sealed_bytes, len(sealed_bytes), ctypes.byref(data), ctypes.byref(length)) == GV_OK
          and take(data, length) == blob, "open it")
    tampered = sealed_bytes[:-1] + bytes([sealed_bytes[-1] ^ 1])
    check(gv["unseal"](vault, VM.encode(), b"tpm.savestate", tampered, len(tampered), ctypes.byref(data), ctypes.byref(length)) == GV_E_INTEGRITY,
          "a tampered sealed blob is GV_E_INTEGRITY")
    check(gv["vault_close"](vault) == GV_OK and gv["vault_close"](other) == GV_OK, "close the vaults")
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
