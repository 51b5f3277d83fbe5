# Sourced by the classroom-service benchmarks (caas*.sh): the one copy of
# what they share. Each bench gets its own root, state dir, cgroup parent,
# link prefix, nftables table and subnets, so nothing else on the host is
# touched, and one teardown that removes all of it even when the bench fails.
#
#   bench_init NAME PREFIX NET   $work, $state, $cg, $prefix, $table; subnets
#                                10.NET.0.0/20 (bridge 10.NET.255.0/24);
#                                teardown on EXIT (KEEP=1 keeps $work)
#   bench_cubby                  $cubby: $CUBBY or target/release/cubby
#                                (built if missing), as an absolute path
#   bench_daemon                 a private `cubby daemon` ($daemon_pid) on
#                                unix://$work/run/cubby.sock
#   bench_serve [ARGS...]        demo data ($admin_pw) and `cubby serve`
#                                ($serve_pid) on 127.0.0.1:$port, ARGS added
#   free_port                    a free TCP port on 127.0.0.1
# A bench with more to stop defines bench_extra_cleanup (run first).

die() { echo "bench: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_require() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    command -v python3 >/dev/null || die "python3 missing (apt-get install -y python3)"
    [ -x /bin/busybox ] || die "busybox-static missing (apt-get install -y busybox-static)"
}

bench_cubby() {
    cubby=${CUBBY:-$repo/target/release/cubby}
    if [ ! -x "$cubby" ]; then
        echo "== building cubby (cargo build --release)"
        (cd "$repo" && cargo build --release -p cubby) || die "cargo build failed"
    fi
    cubby=$(cd "$(dirname "$cubby")" && pwd)/$(basename "$cubby")
}

bench_init() {
    local name=$1
    prefix=$2
    bench_net=$3
    work=$(mktemp -d "/tmp/cubby-bench-$name.XXXXXX")
    state=$(mktemp -d "/run/cubby-bench-$name.XXXXXX")
    cg="cubby-bench-$name-$$"
    table="cubby-bench-$name"
    daemon_pid=
    serve_pid=
    trap bench_cleanup EXIT
}

bench_cleanup() {
    set +e
    declare -F bench_extra_cleanup >/dev/null && bench_extra_cleanup
    [ -n "$serve_pid" ] && kill -9 "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    local mon d p l
    mon=$(cat "$work/run/monitor.sock.lock" 2>/dev/null)
    [ -n "$mon" ] && kill -9 "$mon" 2>/dev/null
    for d in /sys/fs/cgroup/*/"$cg"/*; do
        [ -f "$d/freezer.state" ] && echo THAWED > "$d/freezer.state"
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    sleep 0.5
    grep -o -e "$work[^ ]*" -e "$state[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for d in /sys/fs/cgroup/*/"$cg"; do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$prefix"); do
        ip link del "$l" 2>/dev/null
    done
    nft delete table inet "$table" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $work" >&2; else rm -rf "$work" "$state"; fi
}

bench_daemon() {
    "$cubby" --root "$work/data" --state-dir "$state/containers" daemon \
        --listen "unix://$work/run/cubby.sock" --cgroup-parent "$cg" \
        --net-prefix "$prefix" --nft-table "$table" --bridge-name "${prefix}def" \
        --bridge-subnet "10.$bench_net.255.0/24" --network-pool "10.$bench_net.0.0/20" \
        --resolv-conf /dev/null >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do [ -S "$work/run/cubby.sock" ] && break; sleep 0.1; done
    [ -S "$work/run/cubby.sock" ] || die "daemon did not start: $(cat "$work/daemon.log")"
}

bench_serve() {
    export CUBBY_DATABASE="sqlite://$work/caas.db"
    "$cubby" --root "$work/data" admin init --demo >"$work/demo.txt" || die "admin init --demo failed"
    admin_pw=$(awk '$1 == "admin" {print $3}' "$work/demo.txt")
    port=$(free_port)
    "$cubby" --root "$work/data" serve --listen "127.0.0.1:$port" \
        --engine "unix://$work/run/cubby.sock" --stop-grace 1 "$@" \
        >"$work/serve.log" 2>&1 &
    serve_pid=$!
    bench_wait_health "$port"
}

# Waits (up to 10 s) until the cubby serve on 127.0.0.1:PORT answers /api/health.
bench_wait_health() {
    for _ in $(seq 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/api/health')" 2>/dev/null && return
        sleep 0.1
    done
}
