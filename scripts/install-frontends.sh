#!/usr/bin/env bash
# Installs GuestVault's swtpm-compatible front ends (swtpm, swtpm_setup, swtpm_ioctl)
# into a directory that an operator puts first in libvirt's (or Proxmox's) PATH.
#   scripts/install-frontends.sh [--binary PATH] [--vault DIR] [--nvram-dir DIR] DIR
# --binary: the binary the front ends run: guestvault-vm (the per-VM process alone, small
#           and quick to start) or guestvault (the whole CLI, which answers to the same
#           names). Default: .build/release/guestvault-vm, else .build/debug/guestvault-vm,
#           else guestvault there.
# --vault:  the host's vault, when it is not the default /var/lib/guestvault/vault;
#           then each front end is a two-line wrapper that sets GUESTVAULT_VAULT
#           (libvirt starts swtpm with a cleared environment). Without it, symlinks.
# --nvram-dir: where the domains' <nvram> files live while they run, when it is not
#           the default /run/guestvault/nvram (a directory on tmpfs, root's, 0700/0711);
#           written into the wrappers as GUESTVAULT_NVRAM_DIR.
# See docs/LIBVIRT.md.
set -euo pipefail

binary=""
vault=""
nvram=""
while (( $# > 1 )); do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --vault) vault="$2"; shift 2 ;;
        --nvram-dir) nvram="$2"; shift 2 ;;
        *) echo "install-frontends.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if (( $# != 1 )); then
    echo "usage: install-frontends.sh [--binary PATH] [--vault DIR] [--nvram-dir DIR] DIR" >&2
    exit 2
fi
target="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "$binary" ]]; then
    for candidate in "$root/.build/release/guestvault-vm" "$root/.build/debug/guestvault-vm" \
                     "$root/.build/release/guestvault" "$root/.build/debug/guestvault"; do
        if [[ -x "$candidate" ]]; then binary="$candidate"; break; fi
    done
fi
if [[ -z "$binary" || ! -x "$binary" ]]; then
    echo "install-frontends.sh: no guestvault-vm or guestvault binary (build first, or give --binary)" >&2
    exit 1
fi
binary="$(readlink -f "$binary")"
install -d -m 0755 "$target"
for name in swtpm swtpm_setup swtpm_ioctl; do
    rm -f "$target/$name"
    if [[ -n "$vault" || -n "$nvram" ]]; then
        {
            printf '#!/bin/sh\n'
            [[ -n "$vault" ]] && printf 'GUESTVAULT_VAULT=%q; export GUESTVAULT_VAULT\n' "$vault"
            [[ -n "$nvram" ]] && printf 'GUESTVAULT_NVRAM_DIR=%q; export GUESTVAULT_NVRAM_DIR\n' "$nvram"
            printf 'exec %q %s "$@"\n' "$binary" "$name"
        } > "$target/$name"
        chmod 0755 "$target/$name"
    else
        ln -s "$binary" "$target/$name"
    fi
done
echo "Installed swtpm, swtpm_setup, swtpm_ioctl in $target (running $binary, vault: ${vault:-/var/lib/guestvault/vault}, nvram: ${nvram:-/run/guestvault/nvram})"
