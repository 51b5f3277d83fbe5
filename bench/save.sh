#!/usr/bin/env bash
# docker save benchmark: the daemon's peak RSS while `docker save` streams
# a SIZE_MB image through `cubby daemon`, and its throughput against
# `tar -c` of the same tree (the image's unpacked layer), in the same run,
# alternated (tar, save, tar, save, ...), ITER times each; medians.
#
#   bench/save.sh                     # SIZE_MB=1024 ITER=3, target/debug/cubby
#   CUBBY=target/release/cubby bench/save.sh
#
# The image is a busybox rootfs plus SIZE_MB of random data (incompressible:
# the stored gzip layer is as large as the tree), imported with `cubby
# import`. Everything lives in a temp dir removed on exit. Needs root and
# /usr/local/bin/docker.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-3}
SIZE_MB=${SIZE_MB:-1024}
CUBBY=${CUBBY:-$repo/target/debug/cubby}
DOCKER=${DOCKER:-/usr/local/bin/docker}
die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$CUBBY" ] || die "$CUBBY missing: cargo build -p cubby"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/cubby-savebench.XXXXXX")
dpid=
cleanup() {
    set +e
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    mpid=$(cat "$work/run/monitor.sock.lock" 2>/dev/null)
    [ -n "$mpid" ] && kill "$mpid" 2>/dev/null
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT

"$repo/scripts/mk-busybox-rootfs.sh" "$work/rootfs" >/dev/null
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$work/rootfs/big"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$CUBBY" --root "$work/data" import "$work/rootfs.tar" bench/save:1 >/dev/null
rm -f "$work/rootfs.tar"
layer=$(find "$work/data/layers" -mindepth 1 -maxdepth 1 -type d | head -1)
[ -n "$layer" ] || die "no unpacked layer"

"$CUBBY" --root "$work/data" --state-dir "$work/state" daemon --listen "unix://$work/run/cubby.sock" \
    --cgroup-parent "cubby-bench/save-$$" >"$work/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do [ -S "$work/run/cubby.sock" ] && break; sleep 0.1; done
export DOCKER_HOST=unix://$work/run/cubby.sock
hwm() { awk '/VmHWM/ {print $2}' "/proc/$dpid/status"; }
now() { date +%s.%N; }
before=$(hwm)
tars=() saves=()
for i in $(seq "$ITER"); do
    t0=$(now); tar -C "$layer" -cf - . | cat >/dev/null; t1=$(now)
    tars+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); "$DOCKER" save bench/save:1 | cat >/dev/null; t1=$(now)
    saves+=("$(echo "$t1 - $t0" | bc)")
    echo "run $i: tar ${tars[-1]} s, docker save ${saves[-1]} s"
done
after=$(hwm)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mt=$(median "${tars[@]}") ms=$(median "${saves[@]}")
echo "image: ${SIZE_MB} MiB; median tar $mt s ($(echo "$SIZE_MB / $mt" | bc) MiB/s), median docker save $ms s ($(echo "$SIZE_MB / $ms" | bc) MiB/s); save/tar time ratio $(echo "scale=2; $ms / $mt" | bc)"
echo "daemon VmHWM: ${before} kB before, ${after} kB after the saves"
