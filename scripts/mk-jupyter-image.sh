#!/usr/bin/env bash
# A JupyterHub single-user root filesystem as a tar, for the DockerSpawner
# end-to-end test (crates/cubby/tests/jupyterhub.rs). Nothing comes from
# Docker Hub: Debian bookworm (debootstrap, minbase) + python3, then
# `pip install jupyterhub==HUB_VERSION jupyterlab` in a chroot (the same
# JupyterHub version as the hub's: singleuser and hub must match). The
# test imports the tar with `docker import --change ...` through cubby.
#
#   scripts/mk-jupyter-image.sh OUT.tar [HUB_VERSION]
#
# Needs root, debootstrap, and access to the Debian mirror and PyPI
# (MIRROR, default http://deb.debian.org/debian). About 2-3 minutes.
set -euo pipefail
out=${1:?usage: $0 OUT.tar [HUB_VERSION]}
ver=${2:-$(python3 -c 'import jupyterhub; print(jupyterhub.__version__)')}
mirror=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "$0: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cubby-jupyter-XXXXXX)
trap 'umount "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# The host's resolver and CA bundle (a TLS-inspecting proxy's CA, if any),
# for pip in the chroot only; both are replaced before the tar is made.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$root/etc/ssl/certs/ca-certificates.crt" "$work/ca.crt"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
mount -t proc proc "$root/proc"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$root" python3 -m pip install -q \
    --break-system-packages --no-cache-dir --no-warn-script-location "jupyterhub==$ver" jupyterlab
umount "$root/proc"
cp "$work/ca.crt" "$root/etc/ssl/certs/ca-certificates.crt"
: >"$root/etc/resolv.conf"
# The notebook user (uid 1000, as in Jupyter's docker-stacks images).
echo 'jovyan:x:1000:100:jovyan:/home/jovyan:/bin/bash' >>"$root/etc/passwd"
mkdir -p "$root/home/jovyan"
chown 1000:100 "$root/home/jovyan"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out: jupyterhub $ver single-user rootfs ($(du -h "$out" | cut -f1))"
