#!/usr/bin/env bash
# Builds the GuestVault fuzz targets (libFuzzer + AddressSanitizer) and runs them.
#
#   FuzzTesting/run.sh [fuzz] [TARGET...]   fuzz each target for $FUZZ_SECONDS (default 60)
#   FuzzTesting/run.sh replay [TARGET...]   run every kept crash and corpus input once
#   FuzzTesting/run.sh build                build only; prints "bin: DIR"
#
# Fuzzing starts from Corpus/<Target>/ (copied; the checkout is not changed) and keeps
# every crashing input in Crashes/<Target>/. Prints "fuzz: <Target>: N executions,
# C crashes" per target and exits non-zero if any target crashed or failed to run.
# Nothing listens on the network; temporary files go to one directory, removed at exit.
# docs/RELIABILITY.md explains the targets and the figures.
set -euo pipefail
cd "$(dirname "$0")"
readonly FUZZ_DIR="$PWD"

# name:max_len. max_len fits the largest meaningful input: a container from Vectors/
# (48 KB), a stream header plus the start of a chunk, a slot list of 8 slots (865 B),
# a few control messages / TPM command frames, a small swtpm state file, the used part of
# an OVMF variable store (the Microsoft template's variables end at 23 KB), a boot policy
# entry of 24 PCRs (about 2 KB).
readonly ALL_TARGETS=(
    FuzzContainerReader:65536
    FuzzStreamReader:4096
    FuzzSlotList:1024
    FuzzControlChannel:8192
    FuzzDataChannel:8192
    FuzzSwtpmStateFile:4096
    FuzzTransferReceiver:8192
    FuzzUEFIVariableStore:32768
    FuzzBootPolicy:2048
    FuzzRecoveryKeyFile:256
    FuzzBackupManifest:8192
)
# Read-only seed directories used besides Corpus/<Target>/ (relative to FuzzTesting/).
extra_seeds() {
    case "$1" in
        FuzzContainerReader) echo "../Vectors/formats/containers" ;;
    esac
}

readonly FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
readonly BUILD_TIMEOUT="${FUZZ_BUILD_TIMEOUT:-1800}"
readonly BUILD_FLAGS=(-c debug --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)

die() { echo "fuzz: error: $*" >&2; exit 2; }

mode=fuzz
case "${1:-}" in
    fuzz|replay|build) mode="$1"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
esac
[[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive number of seconds, not '$FUZZ_SECONDS'"

targets=()
if (( $# == 0 )); then
    targets=("${ALL_TARGETS[@]}")
else
    for wanted in "$@"; do
        found=""
        for entry in "${ALL_TARGETS[@]}"; do [[ "${entry%%:*}" == "$wanted" ]] && found="$entry"; done
        [[ -n "$found" ]] || die "unknown target '$wanted' (targets: ${ALL_TARGETS[*]%%:*})"
        targets+=("$found")
    done
fi

# MARK: Toolchain

[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null 2>&1 || die "no Swift toolchain on PATH (GuestVault needs Swift 6.1 or later from swift.org)"
command -v timeout >/dev/null 2>&1 || die "'timeout' (coreutils) is missing"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/guestvault-fuzz-run.XXXXXX")"
readonly WORK
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/tmp" "$WORK/corpus" "$WORK/artifacts" "$WORK/logs"

# The fuzzer runtime and coverage instrumentation ship only with swift.org toolchains
# (not Xcode's): prove a one-line target builds and runs before spending minutes on
# the package.
cat > "$WORK/probe.swift" <<'EOF'
@_cdecl("LLVMFuzzerTestOneInput")
public func probe(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { 0 }
EOF
if ! (cd "$WORK" && timeout 300 swiftc -sanitize=fuzzer,address -parse-as-library probe.swift -o probe >probe.log 2>&1 \
        && SWIFT_BACKTRACE=enable=no timeout 60 ./probe -runs=1 >>probe.log 2>&1); then
    sed 's/^/  /' "$WORK/probe.log" | tail -20 >&2
    die "this Swift toolchain cannot build or run a libFuzzer target (swiftc -sanitize=fuzzer,address); install the swift.org toolchain, which ships libclang_rt.fuzzer"
fi

# MARK: Build

# SwiftPM's own --sanitize=fuzzer keeps it from renaming the executables' entry point
# (libFuzzer provides main); the -Xswiftc flag is what the compiler needs, as one flag:
# the driver keeps only the last -sanitize= it is given.
echo "fuzz: building the fuzz targets (swift build ${BUILD_FLAGS[*]})"
if ! timeout "$BUILD_TIMEOUT" swift build "${BUILD_FLAGS[@]}" >"$WORK/logs/build.log" 2>&1; then
    grep -v "ld.gold: warning: Cannot export local symbol" "$WORK/logs/build.log" | tail -40 >&2
    die "the fuzz targets did not build (or took over ${BUILD_TIMEOUT} s)"
fi
BIN="$(swift build "${BUILD_FLAGS[@]}" --show-bin-path)"
readonly BIN
for entry in "${targets[@]}"; do
    [[ -x "$BIN/${entry%%:*}" ]] || die "the build did not produce $BIN/${entry%%:*}"
done
if [[ "$mode" == build ]]; then
    echo "bin: $BIN"
    exit 0
fi

# The fuzz targets make their temporary files (a vault, the input file) under TMPDIR.
# Crashes are reported by libFuzzer and ASan; the Swift runtime's own backtracer would
# attach to the crashing process and can hang there, so it is off.
export TMPDIR="$WORK/tmp"
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=1:abort_on_error=0:symbolize=1"

failed=0

# MARK: Replay

if [[ "$mode" == replay ]]; then
    for entry in "${targets[@]}"; do
        name="${entry%%:*}"
        inputs=()
        for dir in "Crashes/$name" "Corpus/$name"; do
            [[ -d "$dir" ]] || continue
            while IFS= read -r -d '' file; do inputs+=("$file"); done \
                < <(find "$dir" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
        done
        if (( ${#inputs[@]} == 0 )); then
            echo "replay: $name: no inputs"
            continue
        fi
        # Given files, libFuzzer runs each once and stops at the first that crashes.
        if timeout -k 10 600 "$BIN/$name" -timeout=30 -rss_limit_mb=2048 "${inputs[@]}" >"$WORK/logs/$name.log" 2>&1; then
            echo "replay: $name: ${#inputs[@]} inputs, 0 crashes"
        else
            echo "replay: $name: FAILED (exit $?) on $(grep -m1 -o 'Running: .*' "$WORK/logs/$name.log" | tail -1 || true)" >&2
            grep -E "ERROR|SUMMARY|^ +#[0-9]+ " "$WORK/logs/$name.log" | head -30 >&2 || true
            failed=1
        fi
    done
    exit "$failed"
fi

# MARK: Fuzz

for entry in "${targets[@]}"; do
    name="${entry%%:*}"
    max_len="${entry##*:}"
    corpus="$WORK/corpus/$name"
    artifacts="$WORK/artifacts/$name"
    mkdir -p "$corpus" "$artifacts" "Crashes/$name"
    [[ -d "Corpus/$name" ]] && find "Corpus/$name" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$corpus/" \;
    seeds=("$corpus")
    extra="$(extra_seeds "$name")"
    [[ -n "$extra" && -d "$extra" ]] && seeds+=("$extra")
    options=(-max_total_time="$FUZZ_SECONDS" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048
             -print_final_stats=1 -artifact_prefix="$artifacts/")
    [[ -f "Dictionaries/$name.dict" ]] && options+=(-dict="Dictionaries/$name.dict")

    status=0
    timeout -k 10 $(( FUZZ_SECONDS + 180 )) "$BIN/$name" "${options[@]}" "${seeds[@]}" \
        >"$WORK/logs/$name.log" 2>&1 || status=$?

    executions="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/logs/$name.log" | grep -o '[0-9]*$' | tail -1 || true)"
    [[ -n "$executions" ]] || executions="$(grep -oE '^#[0-9]+' "$WORK/logs/$name.log" | tail -1 | tr -d '#' || true)"
    crashes=0
    while IFS= read -r -d '' artifact; do
        cp "$artifact" "Crashes/$name/"
        crashes=$(( crashes + 1 ))
        echo "fuzz: $name: kept $(basename "$artifact") in FuzzTesting/Crashes/$name/" >&2
    done < <(find "$artifacts" -type f -print0)

    echo "fuzz: $name: ${executions:-0} executions, $crashes crashes"
    if (( crashes > 0 || status != 0 )); then
        failed=1
        if (( status == 124 || status == 137 )); then
            echo "fuzz: $name: stopped by the watchdog after $(( FUZZ_SECONDS + 180 )) s" >&2
        fi
        echo "fuzz: $name: exit status $status; the end of its log:" >&2
        grep -vE '^#[0-9]+.*(NEW|REDUCE|pulse|INITED)|^INFO:|NEW_FUNC|^Dictionary:' "$WORK/logs/$name.log" | tail -40 | sed 's/^/  /' >&2
    fi
done

if (( failed )); then
    echo "fuzz: FAILED: see the crashes above; replay one with $BIN/<Target> FuzzTesting/Crashes/<Target>/<file>" >&2
fi
exit "$failed"
