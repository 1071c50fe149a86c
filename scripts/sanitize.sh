#!/usr/bin/env bash
# Runs the whole test suite under the sanitizers, each in its own build directory so
# the normal .build is left alone:
#
#   scripts/sanitize.sh [address] [thread] [-- swift test arguments]
#
#   address  AddressSanitizer with LeakSanitizer (detect_leaks=1, the default on
#            Linux), build in .build-asan. The default.
#   thread   ThreadSanitizer, build in .build-tsan. Not in the default: with Swift 6.3.1
#            on Linux it reports "Swift access race" on state that Synchronization.Mutex
#            protects (a 10-line program with one Mutex shows it), so its reports need a
#            person to read them; docs/RELIABILITY.md.
# Every process the tests start (the guestvault binary too, built with the same
# sanitizer) writes its reports into one directory; the script prints them and fails if
# there is any. Leaks inside the toolchain's own libraries (XCTest, Foundation), which
# no GuestVault code can free, are suppressed, each named below. docs/RELIABILITY.md has
# the figures of the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null 2>&1 || { echo "sanitize: error: no Swift toolchain on PATH" >&2; exit 2; }

sanitizers=()
test_args=()
while (( $# > 0 )); do
    case "$1" in
        address|thread) sanitizers+=("$1") ;;
        --) shift; test_args=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "sanitize: error: unknown argument '$1' (address, thread, or -- followed by swift test arguments)" >&2; exit 2 ;;
    esac
    shift
done
(( ${#sanitizers[@]} > 0 )) || sanitizers=(address)

scripts/deps.sh --tests

readonly TIMEOUT="${SANITIZE_TIMEOUT:-5400}"
reports="$(mktemp -d "${TMPDIR:-/tmp}/guestvault-sanitize.XXXXXX")"
trap 'rm -rf "$reports"' EXIT

# Leaks in the toolchain's libraries, not in GuestVault (seen with Swift 6.3.1):
#  - XCTest's runner keeps its suite objects until exit (libXCTest.so);
#  - FoundationEssentials' readBytesFromFile leaks its 4 KiB read buffer when
#    String(contentsOfFile:) reads a file that is empty or still growing;
#  - Foundation.Process.run leaves a weak-reference side table.
# And one false positive: a Swift multi-payload enum keeps its case in the spare bits of
# a payload pointer, so LeakSanitizer cannot see that the global test table
# `controlSamples` (Tests/GuestVaultTPMTests/ControlChannelCodecTests.swift) still holds
# the arrays of its `.setStateBlob(..., blob:)` requests.
cat > "$reports/lsan.supp" <<'EOF'
leak:libXCTest.so
leak:20FoundationEssentials17readBytesFromFile
leak:10Foundation7ProcessC3run
leak:GuestVaultTPMTests14controlSamples
EOF

failed=0
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        address) scratch=.build-asan; prefix=asan ;;
        thread)  scratch=.build-tsan; prefix=tsan ;;
    esac
    mkdir -p "$reports/$prefix"
    export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/$prefix/report"
    export LSAN_OPTIONS="suppressions=$reports/lsan.supp:print_suppressions=0"
    export TSAN_OPTIONS="log_path=$reports/$prefix/report:halt_on_error=0"
    export SWIFT_BACKTRACE=enable=no

    echo "sanitize: $sanitizer: building (swift build --build-tests --sanitize=$sanitizer --scratch-path $scratch)"
    if ! timeout "$TIMEOUT" swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" \
            >"$reports/$prefix-build.log" 2>&1; then
        grep -v "ld.gold: warning" "$reports/$prefix-build.log" | tail -30 >&2
        echo "sanitize: $sanitizer: the build failed" >&2
        failed=1
        continue
    fi

    echo "sanitize: $sanitizer: running the test suite"
    status=0
    timeout "$TIMEOUT" swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" "${test_args[@]}" \
        >"$reports/$prefix-test.log" 2>&1 || status=$?
    grep -E "^✘|Test run with|tests? in .* (passed|failed)" "$reports/$prefix-test.log" | tail -20 || true

    count=0
    for report in "$reports/$prefix"/report*; do
        [[ -s "$report" ]] || continue
        count=$(( count + 1 ))
        echo "---- $sanitizer report ($(basename "$report")):"
        grep -E "ERROR|WARNING: ThreadSanitizer|SUMMARY|^ +#[0-9]+ .*/(Sources|Tests)/" "$report" | head -40
    done
    echo "sanitize: $sanitizer: tests exit status $status, $count sanitizer report(s)"
    if (( count > 0 )); then
        mkdir -p "$scratch/sanitizer-reports"
        cp "$reports/$prefix"/report* "$scratch/sanitizer-reports/"
        echo "sanitize: $sanitizer: the full reports are in $scratch/sanitizer-reports/"
    fi
    if (( status != 0 || count > 0 )); then failed=1; fi
done
exit "$failed"
