#!/usr/bin/env bash
# The short fuzz run CI makes after the test suite (docs/RELIABILITY.md):
#   0. FuzzTesting/run.sh build    the targets, in FuzzTesting/.build (a build failure stops here)
#   1. FuzzTesting/run.sh replay   every kept crash and corpus input, once, per target
#   2. FuzzTesting/run.sh fuzz     each target for $FUZZ_SECONDS (default 30 here)
# libFuzzer and AddressSanitizer come with the Swift toolchain; nothing else is needed
# beyond the build dependencies (scripts/deps.sh). Exits non-zero if the build, a replay
# or a fuzz run failed; a crashing input found now is kept in FuzzTesting/Crashes/<Target>/.
# Ends with "fuzz: N passed, M failed" (N, M: targets).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
scripts/deps.sh

export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
log="$(mktemp -d "${TMPDIR:-/tmp}/guestvault-fuzz-short.XXXXXX")"
trap 'rm -rf "$log"' EXIT

started=$SECONDS
FuzzTesting/run.sh build
built=$SECONDS
status=0
FuzzTesting/run.sh replay 2>&1 | tee "$log/replay.txt" || status=1
replayed=$SECONDS
FuzzTesting/run.sh fuzz 2>&1 | tee "$log/fuzz.txt" || status=1
finished=$SECONDS

# One line per target from each mode; a target passes when both say 0 crashes.
targets=$(grep -cE '^fuzz: [A-Za-z0-9]+: [0-9]+ executions, [0-9]+ crashes$' "$log/fuzz.txt" || true)
failed=0
while read -r name; do
    grep -qE "^replay: $name: ([0-9]+ inputs, 0 crashes|no inputs)$" "$log/replay.txt" \
        && grep -qE "^fuzz: $name: [0-9]+ executions, 0 crashes$" "$log/fuzz.txt" \
        || failed=$(( failed + 1 ))
done < <(grep -oE '^fuzz: [A-Za-z0-9]+: [0-9]+ executions' "$log/fuzz.txt" | cut -d' ' -f2 | tr -d ':')
if (( targets == 0 )); then
    echo "fuzz: error: no fuzz target ran" >&2
    status=1
fi
(( failed == 0 )) || status=1

echo "fuzz: build $(( built - started )) s, replay $(( replayed - built )) s, fuzzing $(( finished - replayed )) s (FUZZ_SECONDS=$FUZZ_SECONDS)"
echo "fuzz: $(( targets - failed )) passed, $failed failed"
exit "$status"
