/*
 * guestvault.h: the C ABI of libguestvault (GuestVault's sealed guest state for host
 * tools written in C, C++, Python ctypes, Go cgo, Rust FFI ...). See docs/C-API.md.
 *
 * Conventions
 * - Every function that can fail returns an int status: GV_OK (0) or a negative
 *   GV_E_* code (one per error category; stable). On failure the calling thread's
 *   gv_last_error_message() says what failed and on what; output parameters are left
 *   untouched.
 * - Handles (gv_vault, gv_container, gv_stream) are opaque. Each is released with its
 *   own close function; a handle that is closed, or was never returned by this
 *   library, is refused with GV_E_USAGE (it is looked up, never dereferenced).
 * - Every buffer or string the library returns is allocated by it and freed with
 *   gv_buffer_free(), which zeroes it first. Never free() them.
 * - Secrets passed in (passphrases) are copied; the caller's buffer is not kept.
 * - Lengths are size_t; NULL pointers and out-of-range lengths are usage errors,
 *   never crashes. Strings are NUL-terminated UTF-8.
 *
 * Thread safety
 * - Every function may be called from any thread.
 * - A gv_vault may be shared by threads. A gv_container (and the gv_streams opened
 *   on it) serialises its calls with a lock: calls from several threads are safe but
 *   run one at a time. The last-error message is per thread.
 * - Callbacks (gv_read_fn, gv_write_fn) run on the calling thread, with the
 *   container's lock held: they must not call back into the same container.
 */
#ifndef GUESTVAULT_H
#define GUESTVAULT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version: bumped only by an incompatible change. */
#define GV_ABI_VERSION 1

/* Status codes: 0 is success; each error category has a fixed negative code (the
 * negated exit code of the `guestvault` tool for the same category). */
#define GV_OK 0
#define GV_E_FAILURE (-1)          /* an unexpected failure (a bug, an unexpected state) */
#define GV_E_USAGE (-2)            /* a wrong argument: NULL, bad length, bad flags, closed handle */
#define GV_E_NOT_FOUND (-3)        /* no such file, entry, vault or slot */
#define GV_E_ALREADY_EXISTS (-4)   /* what was to be created exists already */
#define GV_E_PERMISSION (-5)       /* unsafe ownership or permissions */
#define GV_E_LOCKED (-6)           /* another process holds the container or vault */
#define GV_E_KEYS (-7)             /* no key opens it: wrong vault, passphrase or PIN */
#define GV_E_INTEGRITY (-8)        /* corrupt, tampered with, truncated, or not what it claims */
#define GV_E_ROLLBACK (-9)         /* older than the generation the vault has seen */
#define GV_E_LIMIT (-10)           /* a size or count limit */
#define GV_E_IO (-11)              /* a file-system or device operation failed */
#define GV_E_PEER (-12)            /* a peer or callback failed or broke the protocol */
#define GV_E_TIMEOUT (-13)         /* nothing happened within the time allowed */
#define GV_E_UNSUPPORTED (-14)     /* not supported by this build */
#define GV_E_POLICY_MISMATCH (-15) /* a boot-integrity policy does not match */

/* Capabilities (gv_capabilities). */
#define GV_CAP_FILE_VAULT (1u << 0)
#define GV_CAP_PKCS11_VAULT (1u << 1)
#define GV_CAP_STREAMS (1u << 2)
#define GV_CAP_BLOB_SEAL (1u << 3)
#define GV_CAP_REKEY (1u << 4)
#define GV_CAP_VAULT_PASSPHRASE (1u << 5)

/* gv_container_open flags. */
#define GV_OPEN_WRITE (1u << 0)          /* take the writer lock; allow put/delete/commit/rekey */
#define GV_OPEN_ALLOW_ROLLBACK (1u << 1) /* open even if the vault has seen a newer generation */
#define GV_OPEN_NO_UNLOCK (1u << 2)      /* inspect only: no keys (vault may be NULL) */

/* gv_vault_create_file flags. */
#define GV_VAULT_FAST_KDF (1u << 0) /* light scrypt parameters for the passphrase (tests only) */

/* gv_container_rekey flags. */
#define GV_REKEY_KEK 0u        /* re-wrap the vault slots under a new KEK epoch */
#define GV_REKEY_DEK (1u << 0) /* replace the DEK and re-encrypt every entry */

/* gv_entry_info kinds. */
#define GV_ENTRY_BLOB 1
#define GV_ENTRY_STREAM 2

typedef struct gv_vault gv_vault;
typedef struct gv_container gv_container;
typedef struct gv_stream gv_stream;

/* Fills buf with up to cap bytes; returns how many (0 at the end of the input), or a
 * negative number to abort (the call then fails with GV_E_PEER). */
typedef int64_t (*gv_read_fn)(void *context, uint8_t *buf, size_t cap);
/* Consumes len bytes; returns 0, or non-zero to abort (GV_E_PEER). */
typedef int (*gv_write_fn)(void *context, const uint8_t *buf, size_t len);

/* ---- Version, capabilities, errors, buffers ---- */

/* The library version, e.g. "1.0.0" (static storage; never freed). */
const char *gv_version(void);
/* GV_ABI_VERSION of the library that is loaded. */
uint32_t gv_abi_version(void);
/* GV_CAP_* bits this build supports. */
uint64_t gv_capabilities(void);
/* A fixed description of a status code (static storage; never NULL). */
const char *gv_strerror(int status);
/* The message of the last failure on this thread ("" if none). Valid until the next
 * failing call on this thread; never contains key material. */
const char *gv_last_error_message(void);
/* Zeroes and frees a buffer or string the library returned. NULL is ignored. */
void gv_buffer_free(void *buffer);

/* ---- Vaults ---- */

/* Creates a file vault in path (a new or empty directory, made 0700). passphrase may
 * be NULL (no passphrase); flags: 0 or GV_VAULT_FAST_KDF. */
int gv_vault_create_file(const char *path, const uint8_t *passphrase, size_t passphrase_len,
                         uint32_t flags, gv_vault **out);
/* Creates a PKCS#11 vault in path; the root key is a non-extractable key labelled
 * key_label (NULL: "guestvault-root") on the token labelled token, found or made. */
int gv_vault_create_pkcs11(const char *path, const char *module, const char *token,
                           const char *pin_file, const char *key_label, gv_vault **out);
/* Opens an existing vault (file or PKCS#11). passphrase may be NULL. */
int gv_vault_open(const char *path, const uint8_t *passphrase, size_t passphrase_len, gv_vault **out);
/* The latest generation the vault has seen for VM vm_uuid (rollback counter); *known
 * is 0 (and *generation 0) if it has seen none. */
int gv_vault_counter(gv_vault *vault, const char *vm_uuid, uint64_t *generation, int *known);
/* Releases the vault (after its counters are on disk). NULL is ignored. */
int gv_vault_close(gv_vault *vault);

/* ---- Containers ---- */

/* Creates a container for VM vm_uuid at path (which must not exist), opened for
 * writing and unlocked, at generation 1. */
int gv_container_create(gv_vault *vault, const char *path, const char *vm_uuid, gv_container **out);
/* Opens a container; unlocks it with the vault unless GV_OPEN_NO_UNLOCK. */
int gv_container_open(gv_vault *vault, const char *path, uint32_t flags, gv_container **out);
/* Releases the container: staged changes that were not committed are dropped, the
 * writer lock is released (once the gv_streams opened on it are closed too; each
 * keeps the container alive). NULL is ignored. */
int gv_container_close(gv_container *container);

/* The committed generation. */
int gv_container_generation(gv_container *container, uint64_t *generation);
/* The number of key protector slots. */
int gv_container_slot_count(gv_container *container, size_t *count);
/* The VM UUID, lower case, into a 37-byte buffer (36 characters and NUL). */
int gv_container_vm_uuid(gv_container *container, char out[37]);
/* Everything readable without keys, and the vault's counter, as one JSON object
 * (fields: container {path, vm, containerID, generation, created, committed,
 * entries [{name, kind, size, sealedGeneration}], slots [{index, kind, detail}],
 * fileSize, logBytes, liveBytes}, unlocked, unlockedSlot, vaultGeneration). Free
 * *json with gv_buffer_free; *len (may be NULL) excludes the NUL. */
int gv_container_info_json(gv_container *container, char **json, size_t *len);

/* The number of committed entries. */
int gv_container_entry_count(gv_container *container, size_t *count);
/* The name of committed entry index (sorted by name). Free *name with gv_buffer_free. */
int gv_container_entry_name(gv_container *container, size_t index, char **name);
/* The plaintext size and kind (GV_ENTRY_BLOB or GV_ENTRY_STREAM) of a committed entry.
 * kind may be NULL. */
int gv_container_entry_info(gv_container *container, const char *name, uint64_t *size, int *kind);

/* Reads a committed entry whole (up to 64 MiB; larger ones through a stream). Free
 * *data with gv_buffer_free. An empty entry gives a non-NULL *data and *len 0. */
int gv_container_get(gv_container *container, const char *name, uint8_t **data, size_t *len);
/* Reads a committed entry in verified pieces, in order, to write. A failure part-way
 * means the bytes already written must be discarded. */
int gv_container_get_stream(gv_container *container, const char *name, gv_write_fn write, void *context);
/* As gv_container_get_stream, writing to file descriptor fd (not closed). */
int gv_container_get_fd(gv_container *container, const char *name, int fd);

/* Stages data (up to 64 MiB) as entry name; visible after gv_container_commit. data may
 * be NULL if len is 0. */
int gv_container_put(gv_container *container, const char *name, const uint8_t *data, size_t len);
/* Seals everything read returns as stream entry name (constant memory, any size); it
 * becomes the entry with the next commit. */
int gv_container_put_stream(gv_container *container, const char *name, gv_read_fn read, void *context);
/* As gv_container_put_stream, reading file descriptor fd to its end (not closed). */
int gv_container_put_fd(gv_container *container, const char *name, int fd);
/* Stages the removal of entry name. */
int gv_container_delete(gv_container *container, const char *name);
/* Makes every staged change visible atomically and durably; *generation (may be NULL)
 * gets the new generation. */
int gv_container_commit(gv_container *container, uint64_t *generation);
/* Drops every staged change. */
int gv_container_discard(gv_container *container);
/* Rotates keys and commits: GV_REKEY_KEK re-wraps the vault slots under KEK epoch
 * epoch (0: the current epoch plus one); GV_REKEY_DEK replaces the DEK (epoch must be
 * 0). *generation (may be NULL) gets the new generation. */
int gv_container_rekey(gv_container *container, uint32_t flags, uint32_t epoch, uint64_t *generation);

/* ---- Sealed streams: random access to a stream entry's chunks ---- */

/* Opens committed stream entry name for reading chunk by chunk. */
int gv_stream_open(gv_container *container, const char *name, gv_stream **out);
/* The entry's plaintext size and number of chunks. Either pointer may be NULL. */
int gv_stream_size(gv_stream *stream, uint64_t *size, uint64_t *chunks);
/* Reads and verifies chunk index. Free *data with gv_buffer_free. */
int gv_stream_read_chunk(gv_stream *stream, uint64_t index, uint8_t **data, size_t *len);
/* Releases the stream. NULL is ignored. */
int gv_stream_close(gv_stream *stream);

/* ---- Single sealed blobs under a VM's key (no container) ---- */

/* Seals data (up to 64 MiB) under VM vm_uuid's key from vault, bound to context (a
 * NUL-terminated label such as "tpm.savestate", up to 255 bytes; may be NULL for "").
 * The result (docs/C-API.md, "Sealed blob format") is 58 bytes longer than data. */
int gv_blob_seal(gv_vault *vault, const char *vm_uuid, const char *context, const uint8_t *data, size_t len,
                 uint8_t **sealed, size_t *sealed_len);
/* Opens a blob made by gv_blob_seal with the same vault, VM and context; any other
 * key, VM, context or changed byte fails with GV_E_INTEGRITY or GV_E_KEYS. */
int gv_blob_open(gv_vault *vault, const char *vm_uuid, const char *context, const uint8_t *sealed, size_t sealed_len,
                 uint8_t **data, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* GUESTVAULT_H */
