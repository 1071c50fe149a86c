#pragma once
#include <sys/prctl.h>

// prctl(2) is variadic, which Swift cannot call: these two fixed-argument wrappers are
// the whole C of this module.
static inline int guestvault_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

static inline int guestvault_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}
