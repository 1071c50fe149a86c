#!/usr/bin/env bash
# Writes the seed corpora into FuzzTesting/Corpus/<Target>/ (commit the result):
#   FuzzContainerReader  small containers made with the fixed vault (root key
#                        0x30...0x4f, the key of Vectors/formats/containers), by the
#                        target itself; run.sh also seeds it with Vectors/formats/containers/
#   FuzzStreamReader     the stream header of Vectors/formats/containers/basic.state
#   FuzzSlotList         the slot list and each slot of Vectors/formats/keys.json
#   FuzzControlChannel   hand-made swtpm control messages, alone and in the sequences
#                        QEMU sends (start-up, migration)
#   FuzzDataChannel      TPM commands, raw and in the TPM_SEND_COMMAND form
#   FuzzSwtpmStateFile   every swtpm layout, plain and with the target's fixed keys, by
#                        the target itself
#   FuzzTransferReceiver step scripts of a sender of Vectors/formats/containers/basic.state
#                        (well-formed, in pieces, out of order, cut, literal frames), by
#                        the target itself
# The channel seeds start with the receive-size byte (Sources/FuzzSupport/Receives.swift):
# 00 sends the stream in one receive.
# Seeds are a few KB each. Re-running replaces the seed-* files; it needs jq and xxd.
set -euo pipefail
cd "$(dirname "$0")"
for tool in jq xxd; do
    command -v "$tool" >/dev/null 2>&1 || { echo "make-corpus: error: '$tool' is missing (apt-get install jq xxd)" >&2; exit 2; }
done

bin="$(./run.sh build | sed -n 's/^bin: //p')"
[[ -n "$bin" ]] || { echo "make-corpus: error: the fuzz targets did not build" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/guestvault-corpus.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# seed TARGET NAME HEX: writes the bytes HEX (spaces allowed) as Corpus/TARGET/seed-NAME.
seed() {
    mkdir -p "Corpus/$1"
    echo "$3" | tr -d ' \n' | xxd -r -p > "Corpus/$1/seed-$2"
}

targets=(FuzzContainerReader FuzzStreamReader FuzzSlotList FuzzControlChannel FuzzDataChannel FuzzSwtpmStateFile FuzzTransferReceiver)
for target in "${targets[@]}"; do
    mkdir -p "Corpus/$target"
    rm -f "Corpus/$target"/seed-*
done

# Containers, the stream header, swtpm files: written by the targets themselves.
for target in FuzzContainerReader FuzzStreamReader FuzzSwtpmStateFile FuzzTransferReceiver; do
    TMPDIR="$work" SWIFT_BACKTRACE=enable=no GUESTVAULT_FUZZ_MAKE_SEEDS="Corpus/$target" timeout 300 "$bin/$target"
done

# Slot lists from Vectors/formats/keys.json (one list of three, and each slot alone).
keys=../Vectors/formats/keys.json
seed FuzzSlotList list "$(jq -r .slotList "$keys")"
seed FuzzSlotList vault "01$(jq -r .vaultSlot.encoded "$keys")"
seed FuzzSlotList recipient "01$(jq -r .recipientSlot.encoded "$keys")"
seed FuzzSlotList passphrase "01$(jq -r .passphraseSlot.encoded "$keys")"

# Control channel: u32 command code, then its fields (include/swtpm/tpm_ioctl.h);
# docs/SWTPM-PROTOCOL.md. A leading 00: one receive; 01: a receive per byte.
envelope="02 01 000a 0000 00000014  0001 00000004 61626364"   # swtpm envelope around "abcd"
c() { seed FuzzControlChannel "$1" "00 $2"; }
c get-capability      "00000001"
c init                "00000002 00000000"
c init-delete-volatile "00000002 00000001"
c shutdown            "00000003"
c get-established     "00000004"
c set-locality        "00000005 03"
c hash-start          "00000006"
c hash-data           "00000007 00000004 deadbeef"
c hash-end            "00000008"
c cancel              "00000009"
c store-volatile      "0000000a"
c reset-established   "0000000b 03"
c get-stateblob       "0000000c 00000000 00000001 00000000"
c set-stateblob       "0000000d 00000000 00000001 00000014 $envelope"
c set-stateblob-plain "0000000d 00000000 00000002 00000004 01020304"
c stop                "0000000e"
c get-config          "0000000f"
c set-datafd          "00000010"
c set-buffersize      "00000011 00001000"
c get-info            "00000012 00000000 00000003 00000000 00000000"
c lock-storage        "00000013 0000000a"
c qemu-start          "00000001 00000011 00000000 00000002 00000000 00000004"
c qemu-migrate-in     "0000000e 0000000d 00000000 00000001 00000014 $envelope 0000000d 00000000 00000002 00000004 01020304 0000000d 00000000 00000003 00000000 00000002 00000000"
c hash-sequence       "00000006 00000007 00000003 616263 00000008"
seed FuzzControlChannel qemu-locality-padded "00 00000005 03000000"   # QEMU pads the locality to 4 bytes
seed FuzzControlChannel byte-by-byte "01 00000001 00000011 00000000 00000002 00000000"

# Data channel: TPM2_Startup(CLEAR), TPM2_GetRandom(16), TPM2_SelfTest(full).
startup="8001 0000000c 00000144 0000"
d() { seed FuzzDataChannel "$1" "00 $2"; }
d startup             "$startup"
d get-random          "8001 0000000c 0000017b 0010"
d self-test           "8001 0000000b 00000143 01"
d prefixed-startup    "00000008 00 0000000c $startup"
d two-commands        "$startup 8001 0000000c 0000017b 0010"
d prefixed-then-raw   "00000008 03 0000000c $startup $startup"
d partial             "8001 0000000c 0000"
seed FuzzDataChannel split-3 "03 $startup 00000008 00 0000000c $startup"

for target in "${targets[@]}"; do
    echo "make-corpus: Corpus/$target: $(find "Corpus/$target" -type f | wc -l) files, $(cat "Corpus/$target"/* | wc -c) bytes"
done
