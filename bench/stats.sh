#!/usr/bin/env bash
# Cost of the observation endpoints of `cubby daemon`, measured with curl
# over its Unix socket against one running busybox container:
#
#   stats?stream=0&one-shot=1   one cgroup read + /proc/stat
#   top                         /proc of the container's processes
#   json?size=1                 walks the container's upper dir (1 MiB file)
#   logs (10000 lines)          json-file read and multiplexed framing
#   logs -f latency             from a line being written to a follower
#                               receiving it (the follower polls at 100 ms)
#
#   bench/stats.sh               # ITER=50
# Env: ITER (50), CUBBY (target/debug/cubby; built with cargo if missing),
#      KEEP=1 keeps the temp dir.
# Needs root, curl, /bin/busybox (busybox-static), python3.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-50}
die() { echo "bench/stats.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (containers)"
command -v curl >/dev/null || die "needs curl"
[ -x /bin/busybox ] || die "needs /bin/busybox: apt-get install busybox-static"
CUBBY=${CUBBY:-$repo/target/debug/cubby}
[ -x "$CUBBY" ] || (cd "$repo" && cargo build -q -p cubby) || die "cannot build cubby"

work=$(mktemp -d "${TMPDIR:-/tmp}/cubby-statsbench.XXXXXX")
cg="cubby-bench/stats-$$"
daemon_pid=
cleanup() {
    # SIGKILL, as the tests do: the daemon is stateless.
    [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    if [ -f "$work/run/monitor.sock.lock" ]; then
        kill -9 "$(cat "$work/run/monitor.sock.lock")" 2>/dev/null || true
    fi
    for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        [ -d "$d" ] || continue
        for p in $(cat "$d"/*/cgroup.procs 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        sleep 0.2
        rmdir "$d"/* "$d" 2>/dev/null || true
    done
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

# busybox image
mkdir -p "$work/rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$work/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$work/rootfs/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$work/rootfs/etc/passwd"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
C() { "$CUBBY" --root "$work/data" --state-dir "$work/state" "$@"; }
C import "$work/busybox.tar" busybox:latest >/dev/null

sock=$work/run/cubby.sock
# Not through C(): $! must be cubby itself, not a subshell.
"$CUBBY" --root "$work/data" --state-dir "$work/state" daemon --listen "unix://$sock" \
    --cgroup-parent "$cg" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && curl -s --unix-socket "$sock" http://d/_ping >/dev/null && break; sleep 0.05; done
api() { curl -sf --max-time 30 --unix-socket "$sock" "$@"; }

create() { # name cmd
    local id
    id=$(api -X POST -H 'Content-Type: application/json' "http://d/containers/create?name=$1" \
        -d "{\"Image\":\"busybox\",\"Cmd\":[\"sh\",\"-c\",\"$2\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Id"])')
    api -X POST "http://d/containers/$id/start" >/dev/null
    echo "$id"
}
create bb "dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null; i=0; while [ \$i -lt 10000 ]; do echo line-\$i; i=\$((i+1)); done; sleep 600 & wait" >/dev/null
for _ in $(seq 200); do
    [ "$(api 'http://d/containers/bb/logs?stdout=1&tail=1' | tail -c 11)" = "line-9999" ] && break
    sleep 0.1
done

timeit() { # label url
    python3 - "$1" "$2" "$ITER" "$sock" <<'EOF'
import socket, statistics, sys, time
label, url, n, sock = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def get():
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sock)
    s.sendall(f"GET {url} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536): data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return len(data)
get()
ts = []
for _ in range(n):
    t = time.perf_counter(); size = get(); ts.append((time.perf_counter() - t) * 1000)
ts.sort()
print(f"{label:<34} median {statistics.median(ts):7.2f} ms  p90 {ts[int(len(ts)*0.9)]:7.2f} ms  ({size} bytes)")
EOF
}
echo "cubby $("$CUBBY" --version 2>/dev/null | head -1), $(nproc) CPUs, ITER=$ITER"
timeit "stats one-shot" "/containers/bb/stats?stream=0&one-shot=1"
timeit "top" "/containers/bb/top"
timeit "ps -a (no size)" "/containers/json?all=1"
timeit "ps -a -s (1 MiB upper dir)" "/containers/json?all=1&size=1"
timeit "logs, 10000 lines" "/containers/bb/logs?stdout=1"
timeit "logs --tail 10 of 10000 lines" "/containers/bb/logs?stdout=1&tail=10"

# Follow latency: a line written to the log file (as the monitor would
# append) to the follower reading it. Uses a second container whose log
# the script appends to directly.
python3 - "$sock" "$(create ff 'sleep 600')" "$ITER" "$work/data/containers" <<'EOF'
import json, os, socket, statistics, sys, time
sock, cid, n, cdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
path = os.path.join(cdir, cid, "log.json")
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sock)
s.sendall(f"GET /containers/{cid}/logs?stdout=1&follow=1 HTTP/1.1\r\nHost: d\r\n\r\n".encode())
s.recv(4096)  # headers
lat = []
with open(path, "a") as log:
    for i in range(n):
        t = time.perf_counter()
        log.write(json.dumps({"log": f"x{i}\n", "stream": "stdout", "time": "2024-01-01T00:00:00Z"}) + "\n"); log.flush()
        buf = b""
        while f"x{i}\n".encode() not in buf:
            buf += s.recv(4096)
        lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(f"{'logs -f delivery latency':<34} median {statistics.median(lat):7.2f} ms  p90 {lat[int(len(lat)*0.9)]:7.2f} ms")
EOF
