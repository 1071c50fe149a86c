/*
 * The cost of a blob seal through the C API from a C caller: median of gv_blob_seal
 * (plus gv_buffer_free) over 2000 runs for 1 KiB, 4 KiB and 64 KiB. The same seal from
 * Swift is measured by the GuestVaultCTests suite "C API seal overhead"; see
 * docs/C-API.md and the notes for the figures.
 *
 *   capi_bench DIR        (DIR: an empty directory for the vault)
 */
#define _POSIX_C_SOURCE 200809L

#include <guestvault.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: capi_bench DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/vault", argv[1]);
    gv_vault *vault = NULL;
    if (gv_vault_create_file(path, NULL, 0, 0, &vault) != GV_OK) {
        fprintf(stderr, "capi_bench: %s\n", gv_last_error_message());
        return 1;
    }
    enum { RUNS = 2000 };
    static uint64_t times[RUNS];
    const size_t sizes[] = {1024, 4096, 65536};
    uint8_t *plain = malloc(65536);
    memset(plain, 0x5A, 65536);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int i = 0; i < RUNS; i++) {
            uint8_t *sealed = NULL;
            size_t sealed_len = 0;
            uint64_t t0 = now_ns();
            int status = gv_blob_seal(vault, "6f1e7a52-2b0c-4d3e-9a51-0c7d1b2e3f40", "tpm.savestate", plain, sizes[s],
                                      &sealed, &sealed_len);
            gv_buffer_free(sealed);
            times[i] = now_ns() - t0;
            if (status != GV_OK) {
                fprintf(stderr, "capi_bench: %s\n", gv_last_error_message());
                return 1;
            }
        }
        qsort(times, RUNS, sizeof times[0], compare);
        printf("seal %zu B: C caller of gv_blob_seal %.3f us (median of %d)\n", sizes[s], times[RUNS / 2] / 1000.0, RUNS);
    }
    free(plain);
    gv_vault_close(vault);
    return 0;
}
