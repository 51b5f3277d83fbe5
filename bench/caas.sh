#!/usr/bin/env bash
# Classroom service benchmark: `cubby serve` (release build) on a private
# `cubby daemon`, sandboxes from the demo image (busybox httpd on 8080,
# user 1000, 64 MiB, 0.5 CPU).
#
#   bench/caas.sh                    # ITER=50 starts, N_UP=100, N_IDLE=300
#   ITER=10 N_UP=20 N_IDLE=40 bench/caas.sh
#
#  (a) click-to-ready: POST /api/sessions?wait=true (a student starts their
#      sandbox; the answer comes when the session is ready AND the app's port
#      accepts connections), median and p99 over ITER starts, interleaved
#      with the reference: the Docker API directly (create + start of the
#      same image, user, limits, on a bridge network of its own), then the
#      same port wait (TCP connect from the host, inspect + 20 ms between
#      attempts, as the backend does). Overhead = difference of the medians.
#      Targets: overhead <= 20 ms, click-to-ready <= 150 ms at the median.
#  (b) one up-class call (?wait=true) for a class of N_UP: all ready in
#      (target < 3 s on 2 cores); the reference: N_UP client threads doing
#      create + start + port wait through the engine directly.
#  (c) `cubby serve` RSS with N_IDLE ready sessions minus with none, per
#      session (target < 50 KiB).
# The HTTP client is python3 (one connection per request).
#
# Env: ITER (50), N_UP (100), N_IDLE (300, >= ITER + N_UP; the rest in more
#      classes), START_CONCURRENCY (serve's --start-concurrency, default 8),
#      CUBBY (target/release/cubby, built if missing), KEEP=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-50}
N_UP=${N_UP:-100}
N_IDLE=${N_IDLE:-300}

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_require
[ "$N_IDLE" -ge $((ITER + N_UP)) ] || die "N_IDLE ($N_IDLE) must be >= ITER + N_UP"
bench_cubby
bench_init caas cq 212

echo "== preparing: daemon, demo image, users, cubby serve"
bench_daemon
bench_serve ${START_CONCURRENCY:+--start-concurrency "$START_CONCURRENCY"}

python3 - "$work" "$port" "$admin_pw" "$serve_pid" "$ITER" "$N_UP" "$N_IDLE" <<'PY'
import http.client, json, socket, statistics, sys, time

work, port, admin_pw, serve_pid, ITER, N_UP, N_IDLE = sys.argv[1:]
port, serve_pid, ITER, N_UP, N_IDLE = int(port), int(serve_pid), int(ITER), int(N_UP), int(N_IDLE)
SOCK = f"{work}/run/cubby.sock"
IMAGE = "cubby-demo:latest"

def api(method, path, body=None, token=None, ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    h = {"Content-Type": ctype}
    if token:
        h["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    if r.status >= 400:
        raise SystemExit(f"bench: {method} {path}: {r.status} {out[:300]!r}")
    return json.loads(out) if out.strip() else None

class Uds(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("docker", timeout=120)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(SOCK)

def docker(method, path, body=None):
    c = Uds()
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, "/v1.43" + path, body=data, headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    out = r.read()
    c.close()
    if r.status >= 400:
        raise SystemExit(f"bench: docker {method} {path}: {r.status} {out[:300]!r}")
    return json.loads(out) if out.strip() else None

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

admin = api("POST", "/api/auth/login", {"username": "admin", "password": admin_pw})["access_token"]
tpl = api("POST", "/api/templates", {"name": "bench", "spec": {"image": IMAGE, "port": 8080,
           "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64}}, admin)["id"]

def make_class(code, n):
    c = api("POST", "/api/classes", {"name": code, "code": code, "capacity": n, "template_id": tpl}, admin)
    csv = "".join(f"{code}-{i:03d},pw-{code}-{i:03d}\n" for i in range(n))
    api("POST", f"/api/classes/{c['id']}/students/import", csv, admin, "text/csv")
    return c["id"]

# Every account and class first, so (c) compares sessions, not users.
ca = make_class("a", ITER)
tokens = [api("POST", "/api/auth/login", {"username": f"a-{i:03d}", "password": f"pw-a-{i:03d}"})["access_token"]
          for i in range(ITER)]
cb = make_class("b", N_UP)
rest, extra = N_IDLE - ITER - N_UP, []
while rest > 0:
    n = min(rest, 200)
    extra.append(make_class(f"c{len(extra)}", n))
    rest -= n
docker("POST", "/networks/create", {"Name": "bench-ref", "Driver": "bridge"})
time.sleep(1)
rss0 = rss(serve_pid)

# (a) click-to-ready vs the engine directly, interleaved.

def reference(i, remove=True):
    t = time.perf_counter()
    cid = docker("POST", f"/containers/create?name=ref{i}", {
        "Image": IMAGE, "User": "1000:1000",
        "HostConfig": {"NetworkMode": "bench-ref", "Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 64}})["Id"]
    docker("POST", f"/containers/{cid}/start")
    ip = None
    while True:
        if ip:
            try:
                socket.create_connection((ip, 8080), timeout=0.2).close()
                break
            except OSError:
                pass
        info = docker("GET", f"/containers/{cid}/json")
        ip = (info["NetworkSettings"]["Networks"].get("bench-ref") or {}).get("IPAddress") or ip
        time.sleep(0.02)
    took = time.perf_counter() - t
    if remove:
        docker("DELETE", f"/containers/{cid}?force=1")
    return took

def service(i):
    t = time.perf_counter()
    s = api("POST", "/api/sessions?wait=true", {"class_id": ca}, tokens[i])
    took = time.perf_counter() - t
    if s["state"] != "ready":
        raise SystemExit(f"bench: session {s}")
    return took

reference(-1)  # warm-up (image, network)
a, b = [], []
for i in range(ITER):
    a.append(service(i)); b.append(reference(i))
ma, mb = statistics.median(a), statistics.median(b)
print(f"(a) click-to-ready (POST /api/sessions?wait=true, port answering): median {ma*1e3:.1f} ms, "
      f"p99 {pct(a, 99)*1e3:.1f} ms (n={ITER}; target median <= 150 ms)")
print(f"    engine directly (create+start+port wait): median {mb*1e3:.1f} ms, p99 {pct(b, 99)*1e3:.1f} ms; "
      f"service overhead {1e3*(ma-mb):+.1f} ms at the median (target <= 20 ms), ratio {ma/mb:.2f}")

# (b) one up-class of N_UP.
t = time.perf_counter()
out = api("POST", f"/api/classes/{cb}/up?wait=true", None, admin)
took = time.perf_counter() - t
bad = [s for s in out if s["state"] != "ready"]
if len(out) != N_UP or bad:
    raise SystemExit(f"bench: up-class: {len(out)} sessions, not ready: {bad[:3]}")
# The reference: N_UP sandboxes at once through the engine directly (one
# client thread each: create + start + port wait), then removed.
import threading
ref, errors = [], []
def ref_one(i):
    try:
        ref.append(reference(f"up{i}", remove=False))
    except BaseException as e:
        errors.append(repr(e))
t = time.perf_counter()
threads = [threading.Thread(target=ref_one, args=(i,)) for i in range(N_UP)]
for th in threads: th.start()
for th in threads: th.join()
ref_took = time.perf_counter() - t
if errors:
    raise SystemExit(f"bench: reference up: {errors[0]}")
for i in range(N_UP):
    docker("DELETE", f"/containers/refup{i}?force=1")
print(f"(b) up-class of {N_UP}: all ready in {took:.2f} s (target < 3 s); the engine directly, "
      f"{N_UP} concurrent create+start+port wait: {ref_took:.2f} s; ratio {took/ref_took:.2f}")

# (c) serve memory per idle session.
for cid in extra:
    api("POST", f"/api/classes/{cid}/up?wait=true", None, admin)
ready = [s for s in api("GET", "/api/sessions?active=true", None, admin) if s["state"] == "ready"]
time.sleep(2)
rss1 = rss(serve_pid)
print(f"(c) cubby serve RSS: {rss0} KiB with no session, {rss1} KiB with {len(ready)} ready sessions -> "
      f"{(rss1-rss0)/max(1,len(ready)):.1f} KiB per session (target < 50 KiB)")
PY
