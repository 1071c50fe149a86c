// libFuzzer's own mutator, for use inside LLVMFuzzerCustomMutator (provided by the
// fuzzer runtime that -sanitize=fuzzer links into every fuzz target).
#include <stddef.h>
#include <stdint.h>
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
