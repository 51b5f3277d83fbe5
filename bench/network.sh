#!/usr/bin/env bash
# Network benchmark.
#
#   bench/network.sh                       # debug build, N=100, DURATION=5
#   PROFILE=release N=200 bench/network.sh
#
# (1) Attach time: crates/network/examples/attach_bench.rs, N times on one
#     bridge: named netns + veth pair (container end born in the netns) +
#     bridge port + address + default route, through cubby-network's store
#     (IPAM file written with fsync, hosts files). Median and p90 in ms.
# (2) HTTP throughput through a published port vs direct: `cubby daemon`
#     in a temp root, busybox httpd in a container published with
#     -p 127.0.0.1:PORT:80 (nftables DNAT in the output hook, route_localnet
#     on the bridge, masquerade), measured with wrk (Debian package `wrk`)
#     against 127.0.0.1:PORT and against the container's own address;
#     prints requests/s of both and the ratio. busybox httpd forks per
#     request, so both numbers are bounded by the server: the ratio shows
#     what the NAT path costs relative to the direct one.
#
# Env: N (100), DURATION (5 s), CONNS (16), PROFILE (debug|release),
#      KEEP=1 keeps the temp dir. Traffic goes only to 127.0.0.1 and to the
#      address cubby gave the container (10.213.249.0/24).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
N=${N:-100}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
PROFILE=${PROFILE:-debug}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, bridges, nftables)"
[ -x /usr/local/bin/docker ] || die "needs the docker CLI at /usr/local/bin/docker"
[ -x /bin/busybox ] || die "needs /bin/busybox (apt-get install busybox-static)"
command -v nft > /dev/null || die "needs nft (apt-get install nftables)"
command -v wrk > /dev/null || die "needs wrk (apt-get install wrk)"

flag=""
[ "$PROFILE" = release ] && flag="--release"
(cd "$repo" && cargo build -q $flag -p cubby -p cubby-network --example attach_bench) || die "cannot build"
CUBBY=$repo/target/$PROFILE/cubby
ATTACH=$repo/target/$PROFILE/examples/attach_bench

echo "== attach ($PROFILE build)"
"$ATTACH" "$N" 10.213.248.0/24

tmp=$(mktemp -d /tmp/cubby-bench-network.XXXXXX)
cg="cubby-bench/network-$$"
daemon_pid=""
cleanup() {
    docker rm -f benchweb > /dev/null 2>&1 || true
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
    for l in $(ls /sys/class/net | grep '^bn' || true); do ip link del "$l" 2>/dev/null || true; done
    nft delete table inet cubby-bench-net 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

export DOCKER_HOST="unix://$tmp/run/cubby.sock" DOCKER_CONFIG="$tmp/docker-config" DOCKER_CLI_HINTS=false
cubby() { "$CUBBY" --root "$tmp/data" --state-dir "$tmp/state" "$@"; }

rootfs="$tmp/rootfs"
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root,www}
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
head -c 1024 /dev/zero | tr '\0' x > "$rootfs/www/index.html"
head -c 1048576 /dev/zero > "$rootfs/www/big.bin"
tar -C "$rootfs" -cf "$tmp/busybox.tar" .
cubby import "$tmp/busybox.tar" busybox:latest > /dev/null

# Not through the cubby() function: $! must be the daemon itself.
"$CUBBY" --root "$tmp/data" --state-dir "$tmp/state" daemon --listen "$DOCKER_HOST" --cgroup-parent "$cg" \
    --net-prefix bn --nft-table cubby-bench-net --bridge-name bnbr0 \
    --bridge-subnet 10.213.249.0/24 --network-pool 10.213.240.0/22 --resolv-conf /dev/null > /dev/null 2> "$tmp/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do docker version > /dev/null 2>&1 && break; sleep 0.05; done
docker version > /dev/null 2>&1 || die "daemon did not answer: $(cat "$tmp/daemon.log")"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
docker run -d --name benchweb -p "127.0.0.1:$port:80" busybox httpd -f -p 80 -h /www > /dev/null
ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' benchweb)
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.05
done

rps() { # URL -> requests/s
    wrk -t2 -c"$CONNS" -d"${DURATION}s" "$1" | awk '/^Requests\/sec/ {print $2}'
}
# Interleaved, so load from elsewhere hits both alike. Every request is a
# new connection (busybox httpd closes it): the NAT path pays a conntrack
# NAT setup per request, and a masquerade source port search that grows
# with the TIME_WAIT entries of earlier runs (120 s each).
compare() { # TITLE PATH
    echo "== $1"
    local d1 p1 d2 p2
    d1=$(rps "http://$ip:80$2"); p1=$(rps "http://127.0.0.1:$port$2")
    d2=$(rps "http://$ip:80$2"); p2=$(rps "http://127.0.0.1:$port$2")
    python3 - "$d1" "$p1" "$d2" "$p2" <<'PY'
import sys
d1, p1, d2, p2 = map(float, sys.argv[1:])
d, p = (d1 + d2) / 2, (p1 + p2) / 2
print(f"direct    {d:10.1f} req/s  (runs: {d1:.1f}, {d2:.1f})")
print(f"published {p:10.1f} req/s  (runs: {p1:.1f}, {p2:.1f})")
print(f"published/direct: {100 * p / d:.1f}%")
PY
}
compare "1 MiB file (throughput; wrk -t2 -c$CONNS -d${DURATION}s, busybox httpd)" /big.bin
compare "1 KiB page (a new connection per request)" /
