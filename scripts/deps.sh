#!/usr/bin/env bash
# Installs the Debian packages GuestVault needs, only those that are missing.
#   scripts/deps.sh            build dependencies (libtpms, OpenSSL)
#   scripts/deps.sh --tests    plus the real peers the tests talk to
set -euo pipefail

packages=(libtpms-dev libssl-dev pkg-config)
if [[ "${1:-}" == "--tests" ]]; then
    # swtpm/swtpm-tools: interop peer; tpm2-tools: TPM client; softhsm2 + p11-kit
    # headers: PKCS#11 token; qemu + seabios: a real VM firmware talking to the vTPM;
    # python3-cryptography: the independent checker of the transfer vectors;
    # ovmf: UEFI firmware with Secure Boot for the trusted-launch boots;
    # etcd-server/etcd-client: the cluster tests start their own etcd members.
    packages+=(swtpm swtpm-tools tpm2-tools softhsm2 libp11-kit-dev
               qemu-system-x86 seabios openssl time python3 python3-cryptography ovmf
               etcd-server etcd-client
               libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if (( ${#missing[@]} > 0 )); then
    echo "Installing: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's etcd-server package starts a system etcd on 2379/2380: the tests start
# their own members on free ports, so stop the packaged one and keep it from starting.
if [[ "${1:-}" == "--tests" ]] && [[ $(id -u) -eq 0 ]] && dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl disable --now etcd >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service etcd stop >/dev/null 2>&1 || true
        update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
fi

if ! command -v swift >/dev/null 2>&1; then
    if [[ -x /opt/swift/usr/bin/swift ]]; then
        echo "note: swift is at /opt/swift/usr/bin; add it to PATH" >&2
    else
        echo "error: no Swift toolchain found (GuestVault needs Swift 6.1 or later)" >&2
        exit 1
    fi
fi

# libvirtd (the front-end tests run it) resolves the libvirt-qemu user and group before
# it reads qemu.conf; Debian's libvirt-daemon-system would make them.
if [[ "${1:-}" == "--tests" && $(id -u) -eq 0 ]] && ! getent passwd libvirt-qemu >/dev/null; then
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi
