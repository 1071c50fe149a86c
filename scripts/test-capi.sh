#!/bin/bash
# The C API test run (CI calls it): builds, installs into a temporary prefix, and
#   1. compiles Tests/CAPI/capi_test.c with `cc -std=c99 -Wall -Werror` against the
#      installed header, linked through pkg-config, and runs it;
#   2. the same under AddressSanitizer;
#   3. runs the Python ctypes round trip;
#   4. runs a PKCS#11 (SoftHSM2) vault round trip through C;
#   5. checks that the header and the library's exported C symbols (nm -D) agree;
#   6. cross-checks with the CLI: a container made through C opens with
#      `guestvault get`, and one made by `guestvault create/put` opens through C;
#   7. compiles and runs the complete example of docs/C-API.md;
#   8. prints the C-caller seal benchmark (figures only).
# Ends with "N passed, M failed"; exits non-zero on any failure.
#
#   scripts/test-capi.sh [--configuration debug|release] [--no-build]
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH=/opt/swift/usr/bin:$PATH
configuration=debug
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --configuration|-c) configuration="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "test-capi.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

passed=0
failed=0
step() { # step NAME COMMAND...
    local name="$1"; shift
    echo "== $name"
    if "$@"; then
        passed=$((passed + 1)); echo "PASS $name"
    else
        failed=$((failed + 1)); echo "FAIL $name"
    fi
}

work="$(mktemp -d /tmp/guestvault-capi.XXXXXX)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cd "$root"

if [ "$build" = 1 ]; then
    step "build the library and the CLI" swift build -c "$configuration" --product GuestVault
    swift build -c "$configuration" --product guestvault >/dev/null 2>&1 || { echo "FAIL build the CLI"; failed=$((failed + 1)); }
fi
step "install into a temporary prefix" scripts/install.sh --prefix "$prefix" --configuration "$configuration" --no-build
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cli="$(swift build -c "$configuration" --show-bin-path)/guestvault"

compile() { # compile OUTPUT SOURCE [EXTRA FLAGS...]
    local output="$1" source="$2"; shift 2
    # shellcheck disable=SC2046
    cc -std=c99 -Wall -Wextra -Werror "$@" $(pkg-config --cflags guestvault) "$source" \
        $(pkg-config --libs guestvault) -pthread -o "$output"
}

step "pkg-config finds guestvault" pkg-config --exists guestvault
header_languages() { # the installed header is pedantic C99 and valid C++ (extern "C")
    printf '#include <guestvault.h>\nint main(void) { return gv_abi_version() == GV_ABI_VERSION ? 0 : 1; }\n' > "$work/header.c"
    # shellcheck disable=SC2046
    cc -std=c99 -pedantic -Wall -Wextra -Werror $(pkg-config --cflags guestvault) -fsyntax-only "$work/header.c" &&
        c++ -std=c++11 -Wall -Wextra -Werror $(pkg-config --cflags guestvault) -fsyntax-only -x c++ "$work/header.c"
}
step "the header is pedantic C99 and C++" header_languages
step "compile the C test (-std=c99 -Wall -Werror, pkg-config)" compile "$work/capi_test" Tests/CAPI/capi_test.c
run_c_test() { mkdir -p "$work/run-$1" && "$work/$2" run "$work/run-$1"; }
step "run the C test" run_c_test plain capi_test

# AddressSanitizer: the test program is instrumented; the Swift library is not (its
# allocations still go through ASan's malloc, so buffers the library hands out and
# gv_buffer_free are checked). Leak detection is off: the Swift runtime keeps
# metadata caches and per-type allocations for the life of the process, which
# LeakSanitizer reports as leaks at exit that are not the test's.
step "compile the C test with -fsanitize=address" compile "$work/capi_test_asan" Tests/CAPI/capi_test.c -fsanitize=address -fno-omit-frame-pointer -g
run_asan() { ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 run_c_test asan capi_test_asan; }
step "run the C test under AddressSanitizer" run_asan

run_python() { mkdir -p "$work/run-python" && python3 Tests/CAPI/capi_roundtrip.py "$prefix/lib/libguestvault.so" "$work/run-python"; }
step "Python ctypes round trip" run_python

symbols() {
    local header="$prefix/include/guestvault.h" library="$prefix/lib/libguestvault.so"
    # Declared: every function declaration in the header (lines that start with a
    # type at column 0; comments start with "/*" or " *"), by the name before "(".
    grep -E '^[A-Za-z]' "$header" | grep -oE '\bgv_[a-z0-9_]+\(' | tr -d '(' | sort -u > "$work/declared"
    # Exported: defined dynamic symbols that are not Swift-mangled ($s...), minus the
    # linker's own and swift-system's two C shims (csystem_*, not part of our ABI).
    nm -D --defined-only "$library" | awk '{print $NF}' | grep -v '^\$s' | grep -v '^_\$s' \
        | grep -vxE '_init|_fini|_edata|_end|__bss_start|csystem_posix_dup3|csystem_posix_pipe2' \
        | sort -u > "$work/exported"
    if ! diff -u "$work/declared" "$work/exported"; then
        echo "the header and the library's exported C symbols differ (- header only, + library only)"
        return 1
    fi
    echo "$(wc -l < "$work/declared") functions declared and exported"
}
step "header and exported C symbols (nm -D) agree" symbols

pkcs11() { # a SoftHSM2 token in a private configuration
    local module=/usr/lib/softhsm/libsofthsm2.so dir="$work/softhsm"
    mkdir -p "$dir/tokens" && chmod 700 "$dir" || return 1
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" > "$dir/softhsm2.conf"
    export SOFTHSM2_CONF="$dir/softhsm2.conf"
    softhsm2-util --init-token --free --label gv-capi --so-pin 5678 --pin 1234 >/dev/null || return 1
    (umask 077; echo 1234 > "$dir/user.pin")
    "$work/capi_test" pkcs11 "$dir" "$module" gv-capi "$dir/user.pin"
}
step "PKCS#11 vault (SoftHSM2) through C" pkcs11

cross_c_to_cli() {
    local v="$work/cross-vault" uuid="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    "$cli" vault init --vault "$v" >/dev/null || return 1
    head -c $((20 << 20)) /dev/urandom > "$work/cross-in" # over the CLI's 16 MiB blob limit: a stream
    "$work/capi_test" make "$v" "$work/c-made.state" "$uuid" vm.runtime "$work/cross-in" || return 1
    "$cli" get --vault "$v" "$work/c-made.state" vm.runtime "$work/cross-out" || return 1
    cmp "$work/cross-in" "$work/cross-out"
}
step "a container made through C opens with guestvault get" cross_c_to_cli

cross_cli_to_c() {
    local v="$work/cross-vault" uuid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
    head -c 100000 /dev/urandom > "$work/cli-in"
    "$cli" create --vault "$v" --vm "$uuid" "$work/cli-made.state" >/dev/null || return 1
    "$cli" put --vault "$v" "$work/cli-made.state" uefi.nvram "$work/cli-in" 2>/dev/null || return 1
    "$work/capi_test" get "$v" "$work/cli-made.state" uefi.nvram "$work/cli-out" || return 1
    cmp "$work/cli-in" "$work/cli-out"
}
step "a container made by the CLI opens through C" cross_cli_to_c

doc_example() { # the complete example of docs/C-API.md compiles and runs
    awk '/^```c$/{f=1;next} /^```$/{f=0} f' docs/C-API.md > "$work/example.c" &&
        compile "$work/example" "$work/example.c" && mkdir -p "$work/example-run" && "$work/example" "$work/example-run" >/dev/null
}
step "the example in docs/C-API.md compiles and runs" doc_example

bench() {
    compile "$work/capi_bench" Tests/CAPI/capi_bench.c -O2 && mkdir -p "$work/bench" && "$work/capi_bench" "$work/bench"
}
step "C-caller seal benchmark (figures only)" bench

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
