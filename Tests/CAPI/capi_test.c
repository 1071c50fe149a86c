/*
 * The C API test: compiled with `cc -std=c99 -Wall -Werror` against the installed
 * guestvault.h and linked through pkg-config (scripts/test-capi.sh), also under
 * AddressSanitizer.
 *
 *   capi_test run DIR                    the whole test in the empty directory DIR
 *   capi_test get VAULT STATE NAME OUT   reads entry NAME of STATE to file OUT (CLI cross-check)
 *   capi_test make VAULT STATE UUID NAME IN   creates STATE with entry NAME from file IN
 *   capi_test pkcs11 DIR MODULE TOKEN PINFILE a PKCS#11 vault (SoftHSM2 token) round trip
 *
 * Prints one "ok"/"not ok" line per check and a summary; exits 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <guestvault.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed = 0, failed = 0;

static void check(int condition, const char *what) {
    if (condition) {
        passed++;
        printf("ok %d - %s\n", passed + failed, what);
    } else {
        failed++;
        printf("not ok %d - %s (last error: %s)\n", passed + failed, what, gv_last_error_message());
    }
}

/* The status must be `expected`, with a message on failure. */
static void expect(int status, int expected, const char *what) {
    char line[512];
    int ok = status == expected && (expected == GV_OK || gv_last_error_message()[0] != '\0');
    snprintf(line, sizeof line, "%s: %d (%s), expected %d", what, status, gv_strerror(status), expected);
    check(ok, line);
    if (expected != GV_OK && status == expected) printf("#   message: %s\n", gv_last_error_message());
}

/* ---- Deterministic test data ---- */

static uint8_t pattern(uint64_t i, uint64_t seed) {
    uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i % 8)));
}

typedef struct {
    uint64_t total, produced, seed;
    int fail_at_call, calls, overrun;
} source_t;

static int64_t source_read(void *context, uint8_t *buf, size_t cap) {
    source_t *s = context;
    s->calls++;
    if (s->fail_at_call && s->calls == s->fail_at_call) return -5;
    if (s->overrun) return (int64_t)cap + 1;
    uint64_t n = s->total - s->produced;
    if (n > cap) n = cap;
    if (n > 100000) n = 100000; /* short reads on purpose */
    for (uint64_t i = 0; i < n; i++) buf[i] = pattern(s->produced + i, s->seed);
    s->produced += n;
    return (int64_t)n;
}

typedef struct {
    uint64_t seen, seed, mismatches;
    int fail;
} sink_t;

static int sink_write(void *context, const uint8_t *buf, size_t len) {
    sink_t *s = context;
    if (s->fail) return 1;
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern(s->seen + i, s->seed)) s->mismatches++;
    s->seen += len;
    return 0;
}

static int write_file(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *data = malloc(cap);
    for (;;) {
        if (n == cap) data = realloc(data, cap *= 2);
        size_t got = fread(data + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    fclose(f);
    *len = n;
    return data;
}

static int copy_file(const char *from, const char *to) {
    size_t len;
    uint8_t *data = read_file(from, &len);
    if (!data) return -1;
    int r = write_file(to, data, len);
    free(data);
    chmod(to, 0600);
    return r;
}

static int flip_byte(const char *path, off_t offset) {
    int fd = open(path, O_RDWR);
    if (fd < 0) return -1;
    uint8_t b;
    int r = -1;
    if (pread(fd, &b, 1, offset) == 1) {
        b ^= 0x01;
        if (pwrite(fd, &b, 1, offset) == 1) r = 0;
    }
    close(fd);
    return r;
}

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- Thread-local last error ---- */

static void *other_thread(void *unused) {
    (void)unused;
    gv_vault *v = NULL;
    int status = gv_vault_open("/nonexistent/guestvault-capi-test", NULL, 0, &v);
    static char copy[512];
    snprintf(copy, sizeof copy, "%d|%s", status, gv_last_error_message());
    return copy;
}

/* ---- The whole test ---- */

#define VM "6f1e7a52-2b0c-4d3e-9a51-0c7d1b2e3f40"
#define OTHER_VM "11111111-2222-4333-8444-555555555555"
#define STREAM_SIZE (64ull << 20)
#define BLOB_SIZE (200u * 1024u + 7u)

static int run(const char *dir) {
    char vault_path[4096], other_vault_path[4096], phrase_vault_path[4096], state[4096], copy[4096], scratch[4096];
    snprintf(vault_path, sizeof vault_path, "%s/vault", dir);
    snprintf(other_vault_path, sizeof other_vault_path, "%s/other-vault", dir);
    snprintf(phrase_vault_path, sizeof phrase_vault_path, "%s/phrase-vault", dir);
    snprintf(state, sizeof state, "%s/vm.state", dir);
    snprintf(copy, sizeof copy, "%s/vm.state.gen2", dir);
    snprintf(scratch, sizeof scratch, "%s/scratch.bin", dir);

    /* Version and capabilities. */
    check(strlen(gv_version()) > 0, "gv_version is a string");
    check(gv_abi_version() == GV_ABI_VERSION, "gv_abi_version matches the header");
    uint64_t caps = gv_capabilities();
    check((caps & (GV_CAP_FILE_VAULT | GV_CAP_PKCS11_VAULT | GV_CAP_STREAMS | GV_CAP_BLOB_SEAL | GV_CAP_REKEY)) ==
              (GV_CAP_FILE_VAULT | GV_CAP_PKCS11_VAULT | GV_CAP_STREAMS | GV_CAP_BLOB_SEAL | GV_CAP_REKEY),
          "gv_capabilities has vaults, streams, blob seal, rekey");
    for (int code = 0; code >= -16; code--) check(gv_strerror(code) != NULL && gv_strerror(code)[0], "gv_strerror is never NULL");

    /* Vaults. */
    gv_vault *vault = NULL, *other = NULL;
    expect(gv_vault_create_file(vault_path, NULL, 0, 0, &vault), GV_OK, "create a file vault");
    expect(gv_vault_create_file(other_vault_path, NULL, 0, 0, &other), GV_OK, "create a second file vault");
    gv_vault *again = NULL;
    expect(gv_vault_create_file(vault_path, NULL, 0, 0, &again), GV_E_ALREADY_EXISTS, "creating a vault twice");
    check(again == NULL, "a failed call leaves the output untouched");
    const uint8_t phrase[] = "correct horse";
    gv_vault *pv = NULL;
    expect(gv_vault_create_file(phrase_vault_path, phrase, sizeof phrase - 1, GV_VAULT_FAST_KDF, &pv), GV_OK,
           "create a passphrase vault");
    expect(gv_vault_close(pv), GV_OK, "close the passphrase vault");
    pv = NULL;
    expect(gv_vault_open(phrase_vault_path, (const uint8_t *)"wrong horse", 11, &pv), GV_E_KEYS,
           "open a vault with the wrong passphrase");
    expect(gv_vault_open(phrase_vault_path, phrase, sizeof phrase - 1, &pv), GV_OK, "open it with the right one");
    expect(gv_vault_close(pv), GV_OK, "close it");
    expect(gv_vault_open("/nonexistent/guestvault", NULL, 0, &pv), GV_E_NOT_FOUND, "open a missing vault");
    expect(gv_vault_create_file(NULL, NULL, 0, 0, &pv), GV_E_USAGE, "NULL path");
    expect(gv_vault_create_file(scratch, NULL, 0, 0x80, &pv), GV_E_USAGE, "unknown flags");
    expect(gv_vault_create_file(scratch, NULL, 5, 0, &pv), GV_E_USAGE, "NULL passphrase with a length");
    expect(gv_vault_open(vault_path, NULL, 0, NULL), GV_E_USAGE, "NULL out");

    /* A container with a blob and a 64 MiB stream. */
    gv_container *c = NULL;
    expect(gv_container_create(vault, state, "not-a-uuid", &c), GV_E_USAGE, "create with a bad VM UUID");
    expect(gv_container_create(vault, state, VM, &c), GV_OK, "create a container");
    gv_container *c2 = NULL;
    expect(gv_container_create(vault, state, VM, &c2), GV_E_ALREADY_EXISTS, "create over an existing container");
    expect(gv_container_open(vault, state, GV_OPEN_WRITE, &c2), GV_E_LOCKED, "a second writer is locked out");

    uint8_t *blob = malloc(BLOB_SIZE);
    for (size_t i = 0; i < BLOB_SIZE; i++) blob[i] = pattern(i, 7);
    expect(gv_container_put(c, "uefi.nvram", blob, BLOB_SIZE), GV_OK, "put a blob");
    expect(gv_container_put(c, "empty", NULL, 0), GV_OK, "put an empty blob");
    expect(gv_container_put(c, "bad", NULL, 10), GV_E_USAGE, "put NULL data with a length");
    expect(gv_container_put(c, NULL, blob, 1), GV_E_USAGE, "put with a NULL name");
    expect(gv_container_put(c, "", blob, 1), GV_E_USAGE, "put with an empty name");
    source_t src = {STREAM_SIZE, 0, 42, 0, 0, 0};
    expect(gv_container_put_stream(c, "vm.runtime", source_read, &src), GV_OK, "put a 64 MiB stream through a callback");
    check(src.produced == STREAM_SIZE, "the callback was read to its end");
    source_t failing = {1 << 20, 0, 1, 2, 0, 0};
    expect(gv_container_put_stream(c, "broken", source_read, &failing), GV_E_PEER, "a failing read callback");
    source_t overrun = {1 << 20, 0, 1, 0, 0, 1};
    uint64_t generation = 0;
    expect(gv_container_commit(c, &generation), GV_OK, "commit");
    check(generation == 2, "the first commit makes generation 2");
    expect(gv_container_put_stream(c, "overrun", source_read, &overrun), GV_E_PEER, "a callback returning too much");
    expect(gv_container_put_stream(c, "x", NULL, NULL), GV_E_USAGE, "a NULL read callback");

    uint8_t *data = NULL;
    size_t len = 0;
    expect(gv_container_get(c, "uefi.nvram", &data, &len), GV_OK, "get the blob");
    check(len == BLOB_SIZE && data && memcmp(data, blob, len) == 0, "the blob reads back byte for byte");
    gv_buffer_free(data);
    data = NULL;
    expect(gv_container_get(c, "empty", &data, &len), GV_OK, "get the empty blob");
    check(data != NULL && len == 0, "an empty entry is a non-NULL buffer of length 0");
    gv_buffer_free(data);
    gv_buffer_free(NULL);
    expect(gv_container_get(c, "no.such.entry", &data, &len), GV_E_NOT_FOUND, "get a missing entry");
    expect(gv_container_close(c), GV_OK, "close the container");
    expect(gv_container_close(c), GV_E_USAGE, "closing twice is refused, not a crash");
    expect(gv_container_generation(c, &generation), GV_E_USAGE, "a closed handle is refused");
    expect(gv_container_generation((gv_container *)vault, &generation), GV_E_USAGE, "a vault handle is not a container");
    c = NULL;
    check(copy_file(state, copy) == 0, "keep a copy of generation 2");

    /* Reopen after the commit. */
    expect(gv_container_open(vault, state, GV_OPEN_WRITE, &c), GV_OK, "reopen for writing");
    expect(gv_container_generation(c, &generation), GV_OK, "generation");
    check(generation == 2, "the reopened container is at generation 2");
    size_t count = 0;
    expect(gv_container_entry_count(c, &count), GV_OK, "entry count");
    check(count == 3, "three entries");
    int saw_runtime = 0;
    for (size_t i = 0; i < count; i++) {
        char *name = NULL;
        if (gv_container_entry_name(c, i, &name) == GV_OK) {
            if (strcmp(name, "vm.runtime") == 0) saw_runtime = 1;
            gv_buffer_free(name);
        }
    }
    check(saw_runtime, "entry names list vm.runtime");
    char *name = NULL;
    expect(gv_container_entry_name(c, 99, &name), GV_E_USAGE, "entry index out of range");
    uint64_t size = 0;
    int kind = 0;
    expect(gv_container_entry_info(c, "vm.runtime", &size, &kind), GV_OK, "entry info");
    check(size == STREAM_SIZE && kind == GV_ENTRY_STREAM, "vm.runtime is a 64 MiB stream");
    expect(gv_container_entry_info(c, "uefi.nvram", &size, &kind), GV_OK, "entry info of the blob");
    check(size == BLOB_SIZE && kind == GV_ENTRY_BLOB, "uefi.nvram is a blob of its size");
    expect(gv_container_entry_info(c, "nope", &size, &kind), GV_E_NOT_FOUND, "entry info of a missing entry");
    size_t slots = 0;
    expect(gv_container_slot_count(c, &slots), GV_OK, "slot count");
    check(slots == 1, "one vault slot");
    char uuid[37];
    expect(gv_container_vm_uuid(c, uuid), GV_OK, "VM UUID");
    check(strcmp(uuid, VM) == 0, "the VM UUID reads back");
    char *json = NULL;
    size_t json_len = 0;
    expect(gv_container_info_json(c, &json, &json_len), GV_OK, "info as JSON");
    check(json && strlen(json) == json_len && strstr(json, "\"vm.runtime\"") && strstr(json, "\"vaultGeneration\":2"),
          "the JSON names the entries and the vault's counter");
    gv_buffer_free(json);
    uint64_t counter = 0;
    int known = 0;
    expect(gv_vault_counter(vault, VM, &counter, &known), GV_OK, "vault counter");
    check(known && counter == 2, "the vault has seen generation 2");

    sink_t sink = {0, 42, 0, 0};
    expect(gv_container_get_stream(c, "vm.runtime", sink_write, &sink), GV_OK, "get the stream through a callback");
    check(sink.seen == STREAM_SIZE && sink.mismatches == 0, "the 64 MiB stream reads back byte for byte");
    sink_t failing_sink = {0, 42, 0, 1};
    expect(gv_container_get_stream(c, "vm.runtime", sink_write, &failing_sink), GV_E_PEER, "a failing write callback");

    gv_stream *stream = NULL;
    expect(gv_stream_open(c, "vm.runtime", &stream), GV_OK, "open the stream for random access");
    uint64_t chunks = 0;
    expect(gv_stream_size(stream, &size, &chunks), GV_OK, "stream size");
    check(size == STREAM_SIZE && chunks > 1, "the stream has its size and several chunks");
    expect(gv_stream_read_chunk(stream, chunks - 1, &data, &len), GV_OK, "read the last chunk");
    uint64_t chunk_size = STREAM_SIZE / chunks;
    int same = len == chunk_size;
    for (size_t i = 0; same && i < len; i++) same = data[i] == pattern((chunks - 1) * chunk_size + i, 42);
    check(same, "the last chunk is the right bytes");
    gv_buffer_free(data);
    expect(gv_stream_read_chunk(stream, chunks, &data, &len), GV_E_USAGE, "a chunk past the end");
    expect(gv_stream_close(stream), GV_OK, "close the stream");
    expect(gv_stream_open(c, "uefi.nvram", &stream), GV_E_USAGE, "a blob is not a stream");

    /* File descriptors. */
    uint8_t *fdata = malloc(3u << 20);
    for (size_t i = 0; i < (3u << 20); i++) fdata[i] = pattern(i, 9);
    check(write_file(scratch, fdata, 3u << 20) == 0, "write a 3 MiB input file");
    int fd = open(scratch, O_RDONLY);
    expect(gv_container_put_fd(c, "from.fd", fd), GV_OK, "put from a file descriptor");
    close(fd);
    expect(gv_container_put_fd(c, "from.fd", -1), GV_E_USAGE, "a negative fd");
    expect(gv_container_commit(c, &generation), GV_OK, "commit the fd entry");
    char out_path[4096];
    snprintf(out_path, sizeof out_path, "%s/out.bin", dir);
    fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    expect(gv_container_get_fd(c, "from.fd", fd), GV_OK, "get to a file descriptor");
    close(fd);
    uint8_t *back = read_file(out_path, &len);
    check(back && len == (3u << 20) && memcmp(back, fdata, len) == 0, "the fd entry reads back byte for byte");
    free(back);
    free(fdata);

    /* Delete, discard. */
    expect(gv_container_delete(c, "from.fd"), GV_OK, "delete an entry");
    expect(gv_container_delete(c, "never.was"), GV_E_NOT_FOUND, "delete a missing entry");
    expect(gv_container_commit(c, &generation), GV_OK, "commit the deletion");
    expect(gv_container_get(c, "from.fd", &data, &len), GV_E_NOT_FOUND, "a deleted entry is gone");
    expect(gv_container_put(c, "staged", blob, 10), GV_OK, "stage an entry");
    expect(gv_container_discard(c), GV_OK, "discard");
    expect(gv_container_commit(c, &generation), GV_OK, "commit after discard");
    expect(gv_container_get(c, "staged", &data, &len), GV_E_NOT_FOUND, "a discarded entry was never committed");

    /* Rekey: KEK epoch, then DEK. */
    uint64_t before = generation;
    expect(gv_container_rekey(c, GV_REKEY_KEK, 0, &generation), GV_OK, "rotate the KEK");
    check(generation == before + 1, "KEK rotation commits");
    expect(gv_container_rekey(c, GV_REKEY_DEK, 0, &generation), GV_OK, "rotate the DEK");
    expect(gv_container_rekey(c, GV_REKEY_DEK, 5, &generation), GV_E_USAGE, "DEK rotation with an epoch");
    expect(gv_container_rekey(c, 0x10, 0, &generation), GV_E_USAGE, "rekey with unknown flags");
    expect(gv_container_close(c), GV_OK, "close");
    c = NULL;
    expect(gv_container_open(vault, state, 0, &c), GV_OK, "reopen read-only after rekeying");
    expect(gv_container_get(c, "uefi.nvram", &data, &len), GV_OK, "the blob after rekeying");
    check(len == BLOB_SIZE && memcmp(data, blob, len) == 0, "the blob survives both rotations");
    gv_buffer_free(data);
    expect(gv_container_put(c, "x", blob, 1), GV_E_USAGE, "a read-only container refuses a put");
    expect(gv_container_close(c), GV_OK, "close");

    /* Error paths: wrong key, rollback, tampering, truncation. */
    expect(gv_container_open(other, state, 0, &c), GV_E_KEYS, "another vault's key does not open it");
    char rolled[4096];
    snprintf(rolled, sizeof rolled, "%s/rolled.state", dir);
    check(copy_file(copy, rolled) == 0, "an older copy");
    expect(gv_container_open(vault, rolled, 0, &c), GV_E_ROLLBACK, "an older copy is a rollback");
    expect(gv_container_open(vault, rolled, GV_OPEN_ALLOW_ROLLBACK, &c), GV_OK, "allowed with GV_OPEN_ALLOW_ROLLBACK");
    gv_container_close(c);
    expect(gv_container_open(NULL, rolled, GV_OPEN_NO_UNLOCK, &c), GV_OK, "inspect without keys");
    expect(gv_container_generation(c, &generation), GV_OK, "generation without keys");
    check(generation == 2, "the copy is generation 2");
    expect(gv_container_get(c, "uefi.nvram", &data, &len), GV_E_USAGE, "reading needs keys");
    gv_container_close(c);
    expect(gv_container_open(NULL, rolled, 0, &c), GV_E_USAGE, "unlocking needs a vault");

    char tampered[4096];
    snprintf(tampered, sizeof tampered, "%s/tampered.state", dir);
    check(copy_file(copy, tampered) == 0, "a copy to tamper with");
    check(flip_byte(tampered, 4096 + 40 + (off_t)(STREAM_SIZE / 2)) == 0, "flip a bit inside the stream's data");
    expect(gv_container_open(vault, tampered, GV_OPEN_ALLOW_ROLLBACK, &c), GV_OK, "the tampered copy opens (metadata intact)");
    sink_t tsink = {0, 42, 0, 0};
    expect(gv_container_get_stream(c, "vm.runtime", sink_write, &tsink), GV_E_INTEGRITY, "a flipped bit in the stream is detected");
    expect(gv_container_get(c, "uefi.nvram", &data, &len), GV_OK, "the untouched blob still reads");
    gv_buffer_free(data);
    gv_container_close(c);
    check(copy_file(copy, tampered) == 0, "a fresh copy to tamper with");
    off_t end = file_size(tampered);
    check(truncate(tampered, end / 3) == 0, "cut the file short");
    /* A torn tail is what a crash leaves: the container falls back to its last whole
     * commit (generation 1 here), which the vault knows is old. */
    expect(gv_container_open(vault, tampered, 0, &c), GV_E_ROLLBACK, "a truncated container is refused (rollback)");
    check(write_file(tampered, (const uint8_t *)"not a container at all", 22) == 0, "garbage");
    expect(gv_container_open(vault, tampered, 0, &c), GV_E_INTEGRITY, "garbage is not a container");
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/missing.state", dir);
    int missing_status = gv_container_open(vault, missing, 0, &c);
    check(missing_status == GV_E_NOT_FOUND || missing_status == GV_E_IO, "a missing container file is not found (or I/O)");

    /* Single sealed blobs. */
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    expect(gv_blob_seal(vault, VM, "tpm.savestate", blob, 4096, &sealed, &sealed_len), GV_OK, "seal a blob");
    check(sealed_len == 4096 + 58, "a sealed blob is 58 bytes longer");
    expect(gv_blob_open(vault, VM, "tpm.savestate", sealed, sealed_len, &data, &len), GV_OK, "open it");
    check(len == 4096 && memcmp(data, blob, len) == 0, "the sealed blob opens to the same bytes");
    gv_buffer_free(data);
    expect(gv_blob_open(vault, VM, "tpm.volatile", sealed, sealed_len, &data, &len), GV_E_INTEGRITY, "another context");
    expect(gv_blob_open(vault, OTHER_VM, "tpm.savestate", sealed, sealed_len, &data, &len), GV_E_INTEGRITY, "another VM");
    expect(gv_blob_open(other, VM, "tpm.savestate", sealed, sealed_len, &data, &len), GV_E_INTEGRITY, "another vault's key");
    sealed[100] ^= 0x80;
    expect(gv_blob_open(vault, VM, "tpm.savestate", sealed, sealed_len, &data, &len), GV_E_INTEGRITY, "a flipped bit");
    sealed[100] ^= 0x80;
    expect(gv_blob_open(vault, VM, "tpm.savestate", sealed, 30, &data, &len), GV_E_INTEGRITY, "a truncated sealed blob");
    expect(gv_blob_open(vault, VM, "tpm.savestate", NULL, 30, &data, &len), GV_E_USAGE, "NULL sealed bytes");
    expect(gv_blob_seal(vault, VM, NULL, NULL, 0, &sealed, NULL), GV_E_USAGE, "NULL sealed_len");
    gv_buffer_free(sealed);
    expect(gv_blob_seal(vault, VM, NULL, NULL, 0, &sealed, &sealed_len), GV_OK, "seal an empty blob with no context");
    expect(gv_blob_open(vault, VM, "", sealed, sealed_len, &data, &len), GV_OK, "open it with the empty context");
    check(len == 0, "empty");
    gv_buffer_free(data);
    gv_buffer_free(sealed);

    /* The last error is per thread. */
    gv_container_get(NULL, "x", &data, &len);
    char mine[512];
    snprintf(mine, sizeof mine, "%s", gv_last_error_message());
    pthread_t thread;
    void *result = NULL;
    check(pthread_create(&thread, NULL, other_thread, NULL) == 0 && pthread_join(thread, &result) == 0, "run another thread");
    check(result && strncmp(result, "-3|", 3) == 0 && strstr(result, "guestvault-capi-test"), "the other thread sees its own error");
    check(strcmp(mine, gv_last_error_message()) == 0 && strstr(mine, "NULL"), "this thread's message is unchanged");

    free(blob);
    expect(gv_vault_close(vault), GV_OK, "close the vault");
    expect(gv_vault_close(other), GV_OK, "close the other vault");
    expect(gv_vault_close(vault), GV_E_USAGE, "closing a vault twice is refused");
    expect(gv_vault_close(NULL), GV_OK, "closing NULL is a no-op");
    return 0;
}

/* ---- CLI cross-check helpers ---- */

static int get_entry(const char *vault_path, const char *state, const char *name, const char *out) {
    gv_vault *vault = NULL;
    gv_container *c = NULL;
    int fd = -1;
    int status = gv_vault_open(vault_path, NULL, 0, &vault);
    if (status == GV_OK) status = gv_container_open(vault, state, 0, &c);
    if (status == GV_OK) {
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        status = fd < 0 ? GV_E_IO : gv_container_get_fd(c, name, fd);
        if (fd >= 0) close(fd);
    }
    if (status != GV_OK) fprintf(stderr, "capi_test get: %s: %s\n", gv_strerror(status), gv_last_error_message());
    gv_container_close(c);
    gv_vault_close(vault);
    return status == GV_OK ? 0 : 1;
}

static int make_container(const char *vault_path, const char *state, const char *vm, const char *name, const char *in) {
    gv_vault *vault = NULL;
    gv_container *c = NULL;
    int fd = -1;
    int status = gv_vault_open(vault_path, NULL, 0, &vault);
    if (status == GV_OK) status = gv_container_create(vault, state, vm, &c);
    if (status == GV_OK) {
        fd = open(in, O_RDONLY);
        status = fd < 0 ? GV_E_IO : gv_container_put_fd(c, name, fd);
        if (fd >= 0) close(fd);
    }
    if (status == GV_OK) status = gv_container_commit(c, NULL);
    if (status != GV_OK) fprintf(stderr, "capi_test make: %s: %s\n", gv_strerror(status), gv_last_error_message());
    gv_container_close(c);
    gv_vault_close(vault);
    return status == GV_OK ? 0 : 1;
}

static int run_pkcs11(const char *dir, const char *module, const char *token, const char *pin_file) {
    char vault_path[4096], state[4096], other[4096];
    snprintf(vault_path, sizeof vault_path, "%s/p11-vault", dir);
    snprintf(other, sizeof other, "%s/p11-other", dir);
    snprintf(state, sizeof state, "%s/p11.state", dir);
    gv_vault *vault = NULL;
    gv_container *c = NULL;
    expect(gv_vault_create_pkcs11(other, module, "no-such-token", pin_file, NULL, &vault), GV_E_NOT_FOUND,
           "a PKCS#11 vault on a token that does not exist");
    expect(gv_vault_create_pkcs11(vault_path, module, token, pin_file, NULL, &vault), GV_OK, "create a PKCS#11 vault");
    expect(gv_container_create(vault, state, VM, &c), GV_OK, "create a container under the token's root key");
    const uint8_t secret[] = "uefi variables under an HSM";
    expect(gv_container_put(c, "uefi.nvram", secret, sizeof secret), GV_OK, "put");
    expect(gv_container_commit(c, NULL), GV_OK, "commit");
    expect(gv_container_close(c), GV_OK, "close");
    expect(gv_vault_close(vault), GV_OK, "close the vault");
    vault = NULL;
    expect(gv_vault_open(vault_path, NULL, 0, &vault), GV_OK, "reopen the PKCS#11 vault");
    expect(gv_container_open(vault, state, 0, &c), GV_OK, "reopen the container");
    uint8_t *data = NULL;
    size_t len = 0;
    expect(gv_container_get(c, "uefi.nvram", &data, &len), GV_OK, "get");
    check(len == sizeof secret && memcmp(data, secret, len) == 0, "the entry reads back through the token's key");
    gv_buffer_free(data);
    gv_container_close(c);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    expect(gv_blob_seal(vault, VM, "ctx", secret, sizeof secret, &sealed, &sealed_len), GV_OK, "seal a blob with the token's key");
    expect(gv_blob_open(vault, VM, "ctx", sealed, sealed_len, &data, &len), GV_OK, "open it");
    gv_buffer_free(data);
    gv_buffer_free(sealed);
    expect(gv_vault_close(vault), GV_OK, "close");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "run") == 0) {
        run(argv[2]);
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
    if (argc == 6 && strcmp(argv[1], "pkcs11") == 0) {
        run_pkcs11(argv[2], argv[3], argv[4], argv[5]);
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
    if (argc == 6 && strcmp(argv[1], "get") == 0) return get_entry(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 7 && strcmp(argv[1], "make") == 0) return make_container(argv[2], argv[3], argv[4], argv[5], argv[6]);
    fprintf(stderr, "usage: capi_test run DIR | get VAULT STATE NAME OUT | make VAULT STATE UUID NAME IN | pkcs11 DIR MODULE TOKEN PINFILE\n");
    return 2;
}
