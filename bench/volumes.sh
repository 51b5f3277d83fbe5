#!/usr/bin/env bash
# Volume benchmark: what volumes and mounts add to `docker run`, through
# the real docker CLI against `cubby daemon` in a temp root.
#
#   bench/volumes.sh            # ITER=10
#   ITER=20 CUBBY=target/release/cubby bench/volumes.sh
#
# Imports a busybox rootfs (/bin/busybox + its ~400 applet symlinks) as
# busybox:latest, then measures, interleaved, ITER samples (wall time of
# the docker CLI calls, in ms) of:
#   (a) docker volume create NAME             (a new volume each time)
#   (b) docker run -d busybox true; docker wait   (no mounts: the baseline)
#   (c) the same with -v DIR:/mnt             (a bind mount)
#   (d) the same with -v NEWVOL:/data         (a new, empty volume)
#   (e) the same with -v NEWVOL:/bin          (a new volume filled from the
#       image's /bin: busybox + ~400 symlinks copied with owners and times)
#   (f) the same with --tmpfs /t
# and prints the medians and each one minus (b). Everything is removed on
# exit.
#
# Env: ITER (10), CUBBY (target/debug/cubby; built with cargo if missing),
#      KEEP=1 keeps the temp dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-10}
CUBBY=${CUBBY:-$repo/target/debug/cubby}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (containers)"
[ -x /usr/local/bin/docker ] || die "needs the docker CLI at /usr/local/bin/docker"
[ -x /bin/busybox ] || die "needs /bin/busybox (apt-get install busybox-static)"
if [ ! -x "$CUBBY" ]; then
    (cd "$repo" && cargo build -q -p cubby) || die "cannot build cubby"
fi

tmp=$(mktemp -d /tmp/cubby-bench-volumes.XXXXXX)
cg="cubby-bench/volumes-$$"
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    if [ -f "$tmp/run/monitor.sock.lock" ]; then
        mpid=$(cat "$tmp/run/monitor.sock.lock" 2>/dev/null || true)
        [ -n "$mpid" ] && kill -9 "$mpid" 2>/dev/null || true
    fi
    for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        [ -d "$d" ] || continue
        for leaf in "$d"/*/; do
            [ -f "$leaf/cgroup.procs" ] && xargs -r kill -9 < "$leaf/cgroup.procs" 2>/dev/null || true
            rmdir "$leaf" 2>/dev/null || true
        done
        rmdir "$d" 2>/dev/null || true
    done
    grep -o " $tmp[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    [ "${KEEP:-0}" = 1 ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

export DOCKER_HOST="unix://$tmp/run/cubby.sock" DOCKER_CONFIG="$tmp/docker-config" DOCKER_CLI_HINTS=false
cubby() { "$CUBBY" --root "$tmp/data" --state-dir "$tmp/state" "$@"; }

rootfs="$tmp/rootfs"
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
tar -C "$rootfs" -cf "$tmp/busybox.tar" .
cubby import "$tmp/busybox.tar" busybox:latest > /dev/null

cubby daemon --listen "$DOCKER_HOST" --cgroup-parent "$cg" 2> "$tmp/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do docker version > /dev/null 2>&1 && break; sleep 0.05; done
docker version > /dev/null 2>&1 || die "daemon did not answer: $(cat "$tmp/daemon.log")"
mkdir -p "$tmp/host"

now() { date +%s%N; }
declare -A samples
n=0
sample() { # KEY CMD...: time CMD (ms, 2 decimals), append to samples[KEY]
    local key=$1; shift
    local t0 t1
    t0=$(now); "$@" > /dev/null; t1=$(now)
    samples[$key]+="$(( (t1 - t0) / 10000 )) "
}
run_wait() { # NAME ARGS...
    local name=$1; shift
    docker run -d --name "$name" "$@" > /dev/null
    docker wait "$name" > /dev/null
}

for i in $(seq "$ITER"); do
    sample a docker volume create "bench-a$i"
    sample b run_wait "b$i" busybox true
    sample c run_wait "c$i" -v "$tmp/host:/mnt" busybox true
    sample d run_wait "d$i" -v "bench-d$i:/data" busybox true
    sample e run_wait "e$i" -v "bench-e$i:/bin" busybox true
    sample f run_wait "f$i" --tmpfs /t busybox true
    n=$((n + 1))
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "%.2f", m / 100}'; }
base=$(echo "${samples[b]}" | median)
files=$(find "$tmp/data/volumes/bench-e1/_data" | wc -l)
echo "cubby volumes bench: $n samples each, medians in ms (docker CLI wall time)"
for k in a b c d e f; do
    case $k in
        a) what="volume create" ;;
        b) what="run -d + wait, no mounts" ;;
        c) what="  + bind mount (-v DIR:/mnt)" ;;
        d) what="  + new empty volume" ;;
        e) what="  + new volume filled from /bin ($files entries)" ;;
        f) what="  + --tmpfs" ;;
    esac
    m=$(echo "${samples[$k]}" | median)
    if [ "$k" = a ] || [ "$k" = b ]; then
        printf "%-48s %8s\n" "$what" "$m"
    else
        printf "%-48s %8s  (%+.2f)\n" "$what" "$m" "$(echo "$m - $base" | bc -l)"
    fi
done
