#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

// prctl(2) is variadic, which Swift cannot call, and Glibc's module leaves pipe2(2) out
// (it is a GNU extension): these fixed-argument wrappers are the whole C of this module.
static inline int guestvault_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

static inline int guestvault_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}

/* A pipe with both ends close-on-exec and non-blocking, made in one call. */
static inline int guestvault_pipe_cloexec_nonblock(int ends[2]) {
    return pipe2(ends, O_CLOEXEC | O_NONBLOCK);
}
