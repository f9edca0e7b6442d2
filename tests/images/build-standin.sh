#!/usr/bin/env bash
# Build the stand-in for the Lambda build image, for the docker backend's tests.
#
# Public container registries are unreachable from the test machines, so the tests cannot pull
# public.ecr.aws/sam/build-python3.11. Instead: debootstrap a minimal Debian bookworm (python 3.11,
# pip, venv, the Python headers, gcc, libc headers, CA certificates) from the same Debian mirror the
# host's apt uses, `docker import` it and tag it. Reused when the tag already exists.
#
# Usage: tests/images/build-standin.sh [TAG]     (prints the tag on stdout)
# Needs: root, debootstrap, a running Docker engine.
set -euo pipefail

TAG="${1:-layerbuild-standin-build:bookworm}"
SUITE=bookworm
PACKAGES=python3,python3-pip,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi

# The first Debian archive URI the host's apt sources name (deb822 .sources or one-line .list), not the
# security archive; Debian's own mirror otherwise.
host_mirror() {
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' "${files[@]}" 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n 1 || true
}
MIRROR="${LAYERBUILD_DEBIAN_MIRROR:-$(host_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

for tool in debootstrap docker; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed (apt-get install debootstrap docker.io)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root; run this script as root" >&2; exit 1; }

ROOTFS="$(mktemp -d /tmp/layerbuild-standin.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap $SUITE from $MIRROR into $ROOTFS (a few minutes)" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1; then
    tail -n 20 "$ROOTFS.log" >&2
    echo "error: debootstrap failed; full log: $ROOTFS.log" >&2
    exit 1
fi
rm -f "$ROOTFS.log"
# Package downloads are not part of the image; the package lists are fetched again by apt-get update.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
echo "deb $MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"

tar -C "$ROOTFS" --numeric-owner -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$TAG" >/dev/null
echo "$TAG"
