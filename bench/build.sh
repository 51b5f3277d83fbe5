#!/usr/bin/env bash
# Build benchmark: `cubby build` vs `buildah bud --layers` (Debian's buildah,
# runc + cgroupfs as MACHINE-NOTES.md says) on the same 3-stage Dockerfile,
# interleaved (cubby, buildah, cubby, buildah, ...), ITER samples each of:
#   (a) cold: empty store / empty buildah storage (fresh dirs per sample)
#   (b) fully cached rebuild (right after (a), same store)
#   (c) rebuild after one COPY'd file changed (src/f2.txt)
# The base is FROM scratch + ADD of a busybox rootfs tar, so neither tool
# needs a registry or a base image. Prints medians and buildah/cubby ratios
# (> 1: cubby faster). Everything is removed on exit (KEEP=1 keeps it).
#
#   bench/build.sh            # ITER=5
#   ITER=9 bench/build.sh
# Env: ITER (5), CUBBY (target/release/cubby; built with cargo if missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-5}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
for t in buildah runc python3 /bin/busybox; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install -y buildah runc python3 busybox-static)"
done
CUBBY=${CUBBY:-$repo/target/release/cubby}
if [ ! -x "$CUBBY" ]; then
    (cd "$repo" && cargo build --release -p cubby) || die "cannot build cubby"
fi

tmp=$(mktemp -d /tmp/cubby-bench-build.XXXXXX)
cleanup() {
    grep " $tmp" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

# The context: a busybox rootfs tar, three source files, an app file.
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
chmod 1777 "$rootfs/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"
ctx=$tmp/ctx
mkdir -p "$ctx/src"
tar -C "$rootfs" -cf "$ctx/rootfs.tar" .
for i in 1 2 3; do echo "file $i" > "$ctx/src/f$i.txt"; done
echo app > "$ctx/app.txt"
cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch AS base
ADD rootfs.tar /
RUN echo base > /base.txt
FROM base AS build
WORKDIR /src
COPY src/ ./
RUN cat *.txt > all.txt && wc -c all.txt
FROM base
COPY --from=build /src/all.txt /app/all.txt
COPY app.txt /app/
CMD ["cat", "/app/all.txt"]
EOF

now() { date +%s.%N; }
results=$tmp/results
: > "$results"
record() { echo "$1 $2 $3" >> "$results"; }   # tool case seconds

cubby_build() { "$CUBBY" --root "$1" --state-dir "$1-state" build -q -t bench:1 "$ctx" >/dev/null; }
buildah_build() {
    buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay bud --layers \
        --runtime runc --cgroup-manager cgroupfs --isolation oci --network none \
        --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 -q -t bench:1 "$ctx" >/dev/null
}

timed() { # tool case cmd...
    local tool=$1 case=$2; shift 2
    local t0 t1
    t0=$(now); "$@"; t1=$(now)
    record "$tool" "$case" "$(echo "$t1 - $t0" | bc -l)"
}

for i in $(seq 1 "$ITER"); do
    echo "file 2" > "$ctx/src/f2.txt"
    for tool in cubby buildah; do
        dir=$tmp/$tool-$i
        mkdir -p "$dir"
        timed "$tool" cold "${tool}_build" "$dir"
        timed "$tool" cached "${tool}_build" "$dir"
        echo "file 2 changed $i" > "$ctx/src/f2.txt"
        timed "$tool" changed "${tool}_build" "$dir"
        echo "file 2" > "$ctx/src/f2.txt"
        if [ "$tool" = buildah ]; then
            buildah --root "$dir/root" --runroot "$dir/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
        fi
        grep " $dir" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$dir" "$dir-state"
    done
done

python3 - "$results" "$ITER" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for case in ("cold", "cached", "changed"):
    for tool in ("cubby", "buildah"):
        xs = [float(r[2]) for r in rows if r[0] == tool and r[1] == case]
        med[(tool, case)] = statistics.median(xs)
print(f"build benchmark, {sys.argv[2]} interleaved samples each (median seconds)")
print(f"{'case':<10}{'cubby':>10}{'buildah':>10}{'buildah/cubby':>15}")
for case in ("cold", "cached", "changed"):
    c, b = med[("cubby", case)], med[("buildah", case)]
    print(f"{case:<10}{c:>10.3f}{b:>10.3f}{b / c:>15.2f}")
EOF
