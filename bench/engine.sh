#!/usr/bin/env bash
# Engine benchmark: the Docker API of `cubby daemon` against the bare runtime.
#
#   bench/engine.sh                  # ITER=40 latency samples, N=100 containers
#   ITER=20 N=50 bench/engine.sh
#
# In one run, with a release build, a fresh root and a daemon of its own:
#  (a) API latency of one `true` container (with --network none, as the
#      bundle has only loopback; the default bridge network is printed too): POST /containers/create, POST
#      start, POST wait, DELETE (what `docker run --rm IMG true` costs the
#      daemon), median and p99 over ITER samples after WARMUP, interleaved
#      with the bare runtime: `cubby-oci run` of the same command on a busybox
#      bundle (create+start+wait+delete), the runtime benchmark's figure.
#  (b) N concurrent `run -d IMG sleep 300` through the API (N client threads,
#      create+start each): time until all N report running; then all removed.
#  (c) host memory per idle container: RSS (VmRSS, and PSS from smaps_rollup)
#      of daemon + monitor with N idle containers minus with none, over N.
# The API client is python3 http.client over the Unix socket (one
# connection per request, as the docker CLI does).
#
# Env: ITER (40), WARMUP (5), N (100), NET (bridge: the network of (b) and (c)), CUBBY / CUBBY_OCI (target/release/...,
#      built with cargo if missing), KEEP=1 keeps the temp dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-40}
WARMUP=${WARMUP:-5}
N=${N:-100}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
command -v python3 >/dev/null || die "python3 missing (apt-get install -y python3)"

cubby=${CUBBY:-$repo/target/release/cubby}
oci=${CUBBY_OCI:-$repo/target/release/cubby-oci}
if [ ! -x "$cubby" ] || [ ! -x "$oci" ]; then
    echo "== building cubby and cubby-oci (cargo build --release)"
    (cd "$repo" && cargo build --release -p cubby -p cubby-oci) || die "cargo build failed"
fi

work=$(mktemp -d /tmp/cubby-bench-engine.XXXXXX)
state=$(mktemp -d /run/cubby-bench-engine.XXXXXX)
cg="cubby-bench-engine-$$"
daemon_pid=
cleanup() {
    set +e
    [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
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
    if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $work" >&2; else rm -rf "$work" "$state"; fi
}
trap cleanup EXIT

echo "== preparing: busybox image, bundle, daemon"
"$repo/scripts/mk-busybox-rootfs.sh" "$work/rootfs" >/dev/null
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
"$cubby" --root "$work/data" import "$work/busybox.tar" busybox:latest >/dev/null
SPEC_RUNTIME="$oci" "$repo/scripts/mk-bundle.sh" "$work/bundle" /bin/true >/dev/null
"$cubby" --root "$work/data" --state-dir "$state/containers" daemon \
    --listen "unix://$work/run/cubby.sock" --cgroup-parent "$cg" \
    >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/run/cubby.sock" ] && break; sleep 0.1; done
[ -S "$work/run/cubby.sock" ] || die "daemon did not start: $(cat "$work/daemon.log")"

python3 - "$work" "$oci" "$state" "$ITER" "$WARMUP" "$N" "$daemon_pid" <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, threading, time

work, oci, state, ITER, WARMUP, N, daemon_pid = sys.argv[1:]
ITER, WARMUP, N, daemon_pid = int(ITER), int(WARMUP), int(N), int(daemon_pid)
SOCK = f"{work}/run/cubby.sock"
# (b) and (c) on the default network, as `docker run -d` would be.
NET = os.environ.get("NET", "bridge")

class Conn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("docker", timeout=120)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(SOCK)

def api(method, path, body=None):
    c = Conn()
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, "/v1.43" + path, body=data,
              headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    out = r.read()
    c.close()
    if r.status >= 400:
        raise SystemExit(f"bench: {method} {path}: {r.status} {out!r}")
    return json.loads(out) if out.strip() else None

def api_cycle(network="none"):
    t = time.perf_counter()
    cid = api("POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"],
                                             "HostConfig": {"NetworkMode": network}})["Id"]
    api("POST", f"/containers/{cid}/start")
    code = api("POST", f"/containers/{cid}/wait")["StatusCode"]
    api("DELETE", f"/containers/{cid}")
    assert code == 0, code
    return time.perf_counter() - t

n_oci = 0
def oci_cycle():
    global n_oci
    n_oci += 1
    root = f"{state}/oci-{n_oci}"
    t = time.perf_counter()
    subprocess.run([oci, "--root", root, "run", "-b", f"{work}/bundle", f"b{n_oci}"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

for _ in range(WARMUP):
    api_cycle(); oci_cycle()
a, b, c = [], [], []
for _ in range(ITER):
    a.append(api_cycle()); b.append(oci_cycle()); c.append(api_cycle("bridge"))
ma, mb, mc = statistics.median(a), statistics.median(b), statistics.median(c)
print(f"(a) API create+start+wait+remove of `true` (--network none, like the bundle): median "
      f"{ma*1e3:.1f} ms, p99 {pct(a, 99)*1e3:.1f} ms (n={ITER}); cubby-oci run: median {mb*1e3:.1f} ms, "
      f"p99 {pct(b, 99)*1e3:.1f} ms; ratio {ma/mb:.2f} (target <= 1.5)")
print(f"    the same on the default bridge network (netns, veth, address, hosts, nft): median "
      f"{mc*1e3:.1f} ms, p99 {pct(c, 99)*1e3:.1f} ms")

def monitor_pid():
    return int(open(f"{work}/run/monitor.sock.lock").read().strip())

def mem(pid):
    rss = pss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss

def both():
    r1, p1 = mem(daemon_pid); r2, p2 = mem(monitor_pid())
    return r1 + r2, p1 + p2

time.sleep(1)
rss0, pss0 = both()

ids, errors = [None] * N, []
def run_one(i):
    try:
        cid = api("POST", f"/containers/create?name=idle{i}",
                  {"Image": "busybox", "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": NET}})["Id"]
        api("POST", f"/containers/{cid}/start")
        ids[i] = cid
    except BaseException as e:
        errors.append(repr(e))
t = time.perf_counter()
threads = [threading.Thread(target=run_one, args=(i,)) for i in range(N)]
for th in threads: th.start()
for th in threads: th.join()
while True:
    running = api("GET", "/containers/json")
    if len(running) >= N or errors:
        break
    time.sleep(0.01)
took = time.perf_counter() - t
if errors:
    raise SystemExit(f"bench: {len(errors)} runs failed, first: {errors[0]}")
print(f"(b) {N} concurrent run -d busybox sleep 300: all running after {took:.2f} s (target < 3 s)")

time.sleep(2)
rss1, pss1 = both()
print(f"(c) daemon+monitor memory: {rss0} KiB RSS / {pss0} KiB PSS idle-empty, "
      f"{rss1} KiB RSS / {pss1} KiB PSS with {N} idle containers -> "
      f"{(rss1-rss0)/N:.0f} KiB RSS, {(pss1-pss0)/N:.0f} KiB PSS per container (target < 300 KiB)")

t = time.perf_counter()
def rm(cid):
    api("DELETE", f"/containers/{cid}?force=1")
threads = [threading.Thread(target=rm, args=(c,)) for c in ids]
for th in threads: th.start()
for th in threads: th.join()
left = api("GET", "/containers/json?all=1")
print(f"    removed all {N} (rm -f) in {time.perf_counter()-t:.2f} s; left: {len(left)}")
PY
