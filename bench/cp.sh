#!/usr/bin/env bash
# docker cp benchmark: copy a big file out of and into a running container
# of a `cubby daemon` with the real docker CLI, and the daemon's peak RSS
# (copy-out streams through a bounded channel, so it must not grow with
# the file).
#
#   bench/cp.sh                   # SIZE_MB=512 ITER=3, target/debug/cubby
#   CUBBY=target/release/cubby SIZE_MB=1024 bench/cp.sh
#
# Starts a daemon on a temp root (its own cgroup parent), imports a busybox
# rootfs, runs a container that writes SIZE_MB of zeros to /big, then
# times ITER x `docker cp c:/big - >/dev/null`, ITER x `docker cp
# HOSTFILE c:/in/` and ITER x copying out a tree of FILES (5000) small
# files, printing each and the daemon's VmHWM before/after.
# Everything is removed on exit. Needs root and /usr/local/bin/docker.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-3}
SIZE_MB=${SIZE_MB:-512}
FILES=${FILES:-5000}
CUBBY=${CUBBY:-$repo/target/debug/cubby}
DOCKER=${DOCKER:-/usr/local/bin/docker}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$CUBBY" ] || die "$CUBBY missing: cargo build -p cubby"
[ -x "$DOCKER" ] || die "$DOCKER missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/cubby-cpbench.XXXXXX")
cg="cubby-bench/cp-$$"
dpid=
cleanup() {
    set +e
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    local mpid
    mpid=$(cat "$work/run/monitor.sock.lock" 2>/dev/null)
    [ -n "$mpid" ] && kill -9 "$mpid" 2>/dev/null
    for d in /sys/fs/cgroup/*/"$cg"/* /sys/fs/cgroup/"$cg"/*; do
        [ -d "$d" ] || continue
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    sleep 0.2
    for d in /sys/fs/cgroup/*/"$cg"/* /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"/* /sys/fs/cgroup/"$cg"; do
        [ -d "$d" ] && rmdir "$d" 2>/dev/null
    done
    grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work"
}
trap cleanup EXIT

cubby() { "$CUBBY" --root "$work/data" --state-dir "$work/state" "$@"; }
dk() { DOCKER_HOST="unix://$work/run/cubby.sock" DOCKER_CONFIG="$work/dc" "$DOCKER" "$@"; }

"$repo/scripts/mk-busybox-rootfs.sh" "$work/rootfs" >/dev/null
tar -C "$work/rootfs" -cf "$work/bb.tar" .
cubby import "$work/bb.tar" busybox:latest >/dev/null
mkdir -p "$work/run"
"$CUBBY" --root "$work/data" --state-dir "$work/state" daemon --listen "unix://$work/run/cubby.sock" --cgroup-parent "$cg" 2>"$work/daemon.log" &
dpid=$!
for _ in $(seq 200); do [ -S "$work/run/cubby.sock" ] && break; sleep 0.05; done
hwm() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$dpid/status"; }
grep -q daemon "/proc/$dpid/cmdline" || die "pid $dpid is not the daemon"

dk run -d --name big busybox sh -c "mkdir /in /tree && dd if=/dev/zero of=/big bs=1M count=$SIZE_MB 2>/dev/null && i=0 && while [ \$i -lt $FILES ]; do echo \$i > /tree/f\$i; i=\$((i+1)); done && touch /done && sleep 100000" >/dev/null
for _ in $(seq 600); do dk cp big:/done - >/dev/null 2>&1 && break; sleep 0.1; done
dd if=/dev/zero of="$work/hostbig" bs=1M count="$SIZE_MB" 2>/dev/null

echo "cubby: $CUBBY, file: $SIZE_MB MiB, daemon VmHWM before: $(hwm)"
for i in $(seq "$ITER"); do
    s=$(date +%s.%N)
    dk cp big:/big - >/dev/null
    e=$(date +%s.%N)
    echo "out $i: $(echo "$e - $s" | bc) s   daemon VmHWM $(hwm)"
done
for i in $(seq "$ITER"); do
    s=$(date +%s.%N)
    dk cp "$work/hostbig" big:/in/
    e=$(date +%s.%N)
    echo "in  $i: $(echo "$e - $s" | bc) s   daemon VmHWM $(hwm)"
done
for i in $(seq "$ITER"); do
    s=$(date +%s.%N)
    dk cp big:/tree - >/dev/null
    e=$(date +%s.%N)
    echo "tree $i ($FILES files): $(echo "$e - $s" | bc) s   daemon VmHWM $(hwm)"
done
