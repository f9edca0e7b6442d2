#!/usr/bin/env bash
# An arm64 Python 3.11 sysroot from Debian's packages, for verifying arm64 layers on an x86_64 machine under
# QEMU user emulation (layerbuild: LAYERBUILD_SYSROOT_ARM64=DIR, with qemu-user-static installed).
#
# Usage: tests/images/arm64-sysroot.sh [DIR]     (prints DIR on stdout; reused when it already holds python3.11)
# Needs: root (dpkg --add-architecture arm64, apt-get update), a Debian host whose suite ships python3.11
# (bookworm). The host's own packages are not touched: the arm64 .debs are only unpacked into DIR.
set -euo pipefail

DIR="${1:-/var/cache/layerbuild/sysroot-arm64}"
PACKAGES="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 zlib1g libexpat1 libffi8 libssl3
libbz2-1.0 liblzma5 libuuid1 libsqlite3-0 libgcc-s1 libstdc++6 libncursesw6 libtinfo6 libreadline8 libdb5.3 libgdbm6
libnsl2 libtirpc3 libcrypt1 libgomp1"
ALL_ARCH_PACKAGES="media-types"  # Architecture: all

if [ -x "$DIR/usr/bin/python3.11" ]; then
    echo "$DIR"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "error: adding the arm64 architecture to dpkg needs root" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || { echo "error: apt-get not found: this script needs a Debian host" >&2; exit 1; }

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update -qq >/dev/null
work="$(mktemp -d)"
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
staging="$DIR.tmp.$$"
rm -rf "$staging"
mkdir -p "$staging"
(
    cd "$work"
    # shellcheck disable=SC2086
    apt-get download -qq $(for p in $PACKAGES; do printf '%s:arm64 ' "$p"; done) $ALL_ARCH_PACKAGES >/dev/null
)
for deb in "$work"/*.deb; do
    dpkg -x "$deb" "$staging"
done
[ -x "$staging/usr/bin/python3.11" ] || { echo "error: the arm64 packages held no usr/bin/python3.11" >&2; exit 1; }
mkdir -p "$(dirname "$DIR")"
rm -rf "$DIR"
mv "$staging" "$DIR"
echo "$DIR"
