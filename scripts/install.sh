#!/bin/bash
# Installs libguestvault.so, guestvault.h and guestvault.pc under a prefix, so that
# `PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs guestvault` finds them.
#
#   scripts/install.sh --prefix DIR [--configuration debug|release] [--no-build]
#
# PREFIX/lib/libguestvault.so          (SwiftPM builds it as libGuestVault.so: the product
#                                       name `guestvault` is the CLI's)
# PREFIX/include/guestvault.h
# PREFIX/lib/pkgconfig/guestvault.pc
set -euo pipefail

prefix=""
configuration=debug
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --configuration|-c) configuration="${2:?}"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix DIR is required" >&2; exit 2; }
case "$configuration" in debug|release) ;; *) echo "install.sh: --configuration is debug or release" >&2; exit 2 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH=/opt/swift/usr/bin:$PATH
cd "$root"
if [ "$build" = 1 ]; then
    swift build -c "$configuration" --product GuestVault
fi
bin="$(swift build -c "$configuration" --show-bin-path)"
library="$bin/libGuestVault.so"
[ -f "$library" ] || { echo "install.sh: $library is missing; build first" >&2; exit 1; }

# The Swift runtime the library was linked against.
swiftc="$(command -v swiftc)"
runtime="$(cd "$(dirname "$swiftc")/../lib/swift/linux" && pwd)"
version="$(sed -n 's/^let libraryVersion: StaticString = "\(.*\)"$/\1/p' Sources/GuestVaultC/Exports/Library.swift)"
[ -n "$version" ] || { echo "install.sh: could not read the library version" >&2; exit 1; }

mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
install -d -m 0755 "$prefix/lib" "$prefix/include" "$prefix/lib/pkgconfig"
install -m 0755 "$library" "$prefix/lib/libguestvault.so"
install -m 0644 include/guestvault.h "$prefix/include/guestvault.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@SWIFT_RUNTIME@|$runtime|g" -e "s|@VERSION@|$version|g" \
    scripts/guestvault.pc.in > "$prefix/lib/pkgconfig/guestvault.pc"
chmod 0644 "$prefix/lib/pkgconfig/guestvault.pc"
echo "installed libguestvault $version ($configuration) under $prefix"
