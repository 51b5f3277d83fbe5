#!/usr/bin/env bash
# A whole class presses "start" in the same second (issue 13).
#
#   bench/caas-burst.sh              # N=300 students, release build
#   N=100 CUBBY=target/debug/cubby bench/caas-burst.sh
#
# In one run, with a private `cubby daemon` and `cubby serve`:
#  (1) N student accounts (made here) press start within one second:
#      POST /api/sessions, then, as the student's page does, one long poll
#      (GET /api/sessions/{id}?wait=true) answered when the session is
#      ready, then GET /r/{session}/ with its own token through the routing
#      proxy until the sandbox's app (busybox httpd, the demo image) answers
#      200. Per student: time from its press to its first 200; p50, p99,
#      max (all ready), errors, the highest queue_position at the press;
#      host CPU (from /proc/stat; by process: serve, daemon, monitor, the
#      containers, this client) and memory (MemTotal - MemAvailable) during
#      the burst, serve and daemon RSS.
#  (2) The reference, same run: the same burst straight at the engine, N
#      client threads each doing create + start (same image, user, limits,
#      on a bridge network of its own) and waiting for the port (TCP
#      connect, inspect + 20 ms between attempts); then the removal of the N
#      containers (the network's per-container cost shows there).
#  (1b) Between them, the same student burst with a warm pool of N: the
#      class gets a scheduled start (an exam window, PUT
#      /api/classes/{id}/exam) on a pooled template (warm_pool 1), so the
#      service warms a pool of the class's own, sized from its roster (N),
#      on the class network; the time to make it, then the burst, and the
#      pool's claims/misses/claim phases.
#
# Env: N (300), START_CONCURRENCY (serve's --start-concurrency; default
#      serve's own), CUBBY (target/release/cubby, built if missing), KEEP=1,
#      PERF_DIR (a system-wide `perf record -g` of each burst, burstK.data).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
N=${N:-300}

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_require

bench_cubby
bench_init burst cw 211

echo "== preparing: daemon, demo image, $N students, cubby serve"
bench_daemon
# Classes (and the warm pool's network) over a /24 take their subnets from
# a range of this bench's own: 10.NET.16.0/20 (the daemon's pool is
# 10.NET.0.0/20); the reference network is an explicit /22 (10.NET.32.0/22).
bench_serve --path-routing --class-subnets "10.$bench_net.16.0/20" \
    ${START_CONCURRENCY:+--start-concurrency "$START_CONCURRENCY"}

python3 - "$work" "$port" "$admin_pw" "$serve_pid" "$daemon_pid" "$N" "$bench_net" "$cg" <<'PY'
import http.client, json, os, signal, socket, statistics, subprocess, sys, threading, time

work, port, admin_pw, serve_pid, daemon_pid, N, NET, CGROUP = sys.argv[1:]
port, serve_pid, daemon_pid, N = int(port), int(serve_pid), int(daemon_pid), int(N)
SOCK = f"{work}/run/cubby.sock"
IMAGE = "cubby-demo:latest"

def req(method, path, body=None, token=None, ctype="application/json", src=None):
    # src: a loopback source address (a class logs in from many machines;
    # from one address the login rate limit would refuse it, as it should).
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300,
                                   source_address=(src, 0) if src else None)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    h = {"Content-Type": ctype}
    if token:
        h["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out

def api(method, path, body=None, token=None, ctype="application/json", src=None):
    st, out = req(method, path, body, token, ctype, src)
    if st >= 400:
        raise RuntimeError(f"{method} {path}: {st} {out[:300]!r}")
    return json.loads(out) if out.strip() else None

class Uds(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("docker", timeout=300)
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
        raise RuntimeError(f"docker {method} {path}: {r.status} {out[:300]!r}")
    return json.loads(out) if out.strip() else None

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def proc_cpu(pid):
    """User + system CPU seconds of one process (its threads included)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0

def containers_cpu():
    """CPU seconds of every process in the daemon's cgroup parent (the containers)."""
    try:
        return int(open(f"/sys/fs/cgroup/cpuacct/{CGROUP}/cpuacct.usage").read()) / 1e9
    except OSError:
        return 0.0

def who_cpu():
    """Where the host's CPU goes, in seconds: our processes, containers, this client."""
    mon = open(f"{work}/run/monitor.sock.lock").read().strip()
    t = os.times()
    return {"serve": proc_cpu(serve_pid), "daemon": proc_cpu(daemon_pid), "monitor": proc_cpu(mon),
            "containers": containers_cpu(), "bench client": t.user + t.system}

class Host:
    """CPU busy share (and by whom) and peak memory in use while running."""
    def __init__(self):
        self.stop = False
        self.peak = 0
        self.t = threading.Thread(target=self.run, daemon=True)
    @staticmethod
    def cpu():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)
    @staticmethod
    def used():
        m = {}
        for line in open("/proc/meminfo"):
            k, v = line.split(":")
            m[k] = int(v.split()[0])
        return m["MemTotal"] - m["MemAvailable"]
    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.used())
            time.sleep(0.1)
    def __enter__(self):
        # PERF_DIR=DIR: a system-wide profile of each burst (perf record -a -g).
        self.perf = None
        if os.environ.get("PERF_DIR"):
            Host.n = getattr(Host, "n", 0) + 1
            out = f"{os.environ['PERF_DIR']}/burst{Host.n}.data"
            self.perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "199", "-o", out],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        self.load = os.getloadavg()
        self.base = self.used()
        self.c0 = self.cpu()
        self.who0 = who_cpu()
        self.t.start()
        return self
    def __exit__(self, *a):
        self.stop = True
        self.t.join()
        if self.perf:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait()
        b1, t1 = self.cpu()
        self.busy = (b1 - self.c0[0]) / max(1, t1 - self.c0[1])
        self.busy_s = (b1 - self.c0[0]) / os.sysconf("SC_CLK_TCK")
        who1 = who_cpu()
        self.who = {k: who1[k] - self.who0[k] for k in who1}
    def __str__(self):
        who = ", ".join(f"{k} {v:.1f}" for k, v in self.who.items())
        rest = self.busy_s - sum(self.who.values())
        return (f"host CPU busy {self.busy*100:.0f}% (all cores), memory in use +{(self.peak-self.base)/1024:.0f} MiB "
                f"at peak ({self.base/1024:.0f} MiB before); load average before {self.load[0]:.2f}, "
                f"after {os.getloadavg()[0]:.2f}\n    CPU seconds {self.busy_s:.1f}: {who}, "
                f"kernel threads and the rest {rest:.1f}")

admin = api("POST", "/api/auth/login", {"username": "admin", "password": admin_pw})["access_token"]
tpl = api("POST", "/api/templates", {"name": "burst", "spec": {"image": IMAGE, "port": 8080,
           "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64}}, admin)["id"]
c = api("POST", "/api/classes", {"name": "burst", "code": "burst", "capacity": N, "template_id": tpl}, admin)
csv = "".join(f"b-{i:03d},pw-burst-{i:03d}\n" for i in range(N))
api("POST", f"/api/classes/{c['id']}/students/import", csv, admin, "text/csv")
tokens = [api("POST", "/api/auth/login", {"username": f"b-{i:03d}", "password": f"pw-burst-{i:03d}"},
              src=f"127.0.{1 + i // 200}.{1 + i % 200}")["access_token"]
          for i in range(N)]
# A /22: the engine's own pool hands out /24s (253 containers).
docker("POST", "/networks/create", {"Name": "burst-ref", "Driver": "bridge",
                                    "IPAM": {"Config": [{"Subnet": f"10.{NET}.32.0/22"}]}})

def burst(one):
    """N threads released together; one(i) returns its time to ready."""
    times, errors = [None] * N, []
    gate = threading.Barrier(N + 1)
    def run(i):
        try:
            gate.wait()
            times[i] = one(i)
        except BaseException as e:
            errors.append(f"{i}: {e!r}")
    ths = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for t in ths: t.start()
    t0 = time.perf_counter()
    gate.wait()
    for t in ths: t.join()
    return time.perf_counter() - t0, [t for t in times if t is not None], errors

max_pos = [0]
def student(i):
    # As the student's page does (app.js startSession): start, one long
    # poll answered when the session settles, then the app through the
    # proxy (a 503 while a route is still being set is retried).
    t = time.perf_counter()
    s = api("POST", "/api/sessions", {"class_id": c["id"]}, tokens[i])
    max_pos[0] = max(max_pos[0], s.get("queue_position") or 0)
    while s["state"] in ("requested", "starting"):
        s = api("GET", f"/api/sessions/{s['id']}?wait=true", None, tokens[i])
    if s["state"] != "ready":
        raise RuntimeError(f"session {s['state']}: {s.get('reason')}")
    for _ in range(200):
        st, _ = req("GET", f"/r/{s['id']}/", None, tokens[i])
        if st == 200:
            return time.perf_counter() - t
        time.sleep(0.05)
    raise RuntimeError(f"session {s['id']} ready but its app answered {st} for 10 s")

def reference(i):
    t = time.perf_counter()
    cid = docker("POST", f"/containers/create?name=ref{i}", {
        "Image": IMAGE, "User": "1000:1000",
        "HostConfig": {"NetworkMode": "burst-ref", "Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 64}})["Id"]
    docker("POST", f"/containers/{cid}/start")
    ip = None
    while True:
        if ip:
            try:
                socket.create_connection((ip, 8080), timeout=0.2).close()
                return time.perf_counter() - t
            except OSError:
                pass
        info = docker("GET", f"/containers/{cid}/json")
        ip = (info["NetworkSettings"]["Networks"].get("burst-ref") or {}).get("IPAddress") or ip
        time.sleep(0.02)

def student_burst(label, target, metrics):
    """The students' burst, its report line, host and RSS figures, and the
    /metrics lines starting with `metrics`."""
    time.sleep(1)
    rs0, rd0 = rss(serve_pid), rss(daemon_pid)
    # The admission queue's length, sampled from /metrics 4 times a second.
    queue, sampling = [0], [True]
    def sample_queue():
        while sampling[0]:
            st, m = req("GET", "/metrics")
            for line in m.decode().splitlines():
                if line.startswith("cubby_admission_queue_length "):
                    queue[0] = max(queue[0], int(float(line.split()[-1])))
            time.sleep(0.25)
    sampler = threading.Thread(target=sample_queue)
    sampler.start()
    with Host() as h:
        took, times, errors = burst(student)
    sampling[0] = False
    sampler.join()
    rs1, rd1 = rss(serve_pid), rss(daemon_pid)
    print(f"{label}: all ready after {took:.2f} s (target < {target} s); per student p50 {pct(times, 50):.2f} s, "
          f"p99 {pct(times, 99):.2f} s; errors {len(errors)}{': ' + errors[0] if errors else ''}; "
          f"highest queue_position at the press {max_pos[0]}, admission queue at most {queue[0]}")
    print(f"    {h}; serve RSS {rs0}->{rs1} KiB, daemon RSS {rd0}->{rd1} KiB")
    st, m = req("GET", "/metrics")
    for line in m.decode().splitlines():
        if line.startswith(metrics):
            print(f"    {line}")

student_burst(f"(1) {N} students press start within 1 s (no warm pool), until 200 through the proxy", 10,
              ("cubby_admission_wait_seconds_", "cubby_provision_seconds_sum", "cubby_provision_seconds_count",
               "cubby_engine_errors_total", "cubby_provision_failures_total",
               "cubby_provision_phase_seconds_sum"))
t = time.perf_counter()
api("POST", f"/api/classes/{c['id']}/down", None, admin)
while any(s["state"] in ("stopping", "ready") for s in api("GET", "/api/sessions?active=true", None, admin)):
    time.sleep(0.2)
print(f"    down-class of {N} (archive, verify, remove each): {time.perf_counter()-t:.2f} s")

# (1b) the same burst with a warm pool of N: a scheduled start of the
# class (its exam window, open now) on a pooled template makes a pool of
# the class's own sized from its N enrolled students, on its network; made
# first (timed: that is the pool's own start-up), then claimed.
spec = {"image": IMAGE, "port": 8080, "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64, "warm_pool": 1}
api("PUT", f"/api/templates/{tpl}", {"spec": spec}, admin)
now = int(time.time())
api("PUT", f"/api/classes/{c['id']}/exam", {"starts_at": now - 5, "ends_at": now + 7200}, admin)
def pool_ready():
    st, m = req("GET", "/metrics")
    for line in m.decode().splitlines():
        if line.startswith(f'cubby_pool_class_ready{{class="{c["id"]}"}}'):
            return int(float(line.split()[-1]))
    return 0
t = time.perf_counter()
while pool_ready() < N:
    if time.perf_counter() - t > 600:
        raise SystemExit(f"the warm pool reached {pool_ready()} of {N} in 600 s")
    time.sleep(0.2)
print(f"(1b) warm pool of {N} (the class's, for its scheduled start) made in {time.perf_counter()-t:.2f} s")
max_pos[0] = 0
student_burst(f"     {N} students press start within 1 s (warm pool of {N}), until 200 through the proxy", 3,
              ("cubby_pool_claims_total", "cubby_pool_misses_total", "cubby_pool_failed_claims_total",
               "cubby_pool_claim_phase_seconds_sum", "cubby_pool_claim_phase_seconds_count"))
spec["warm_pool"] = 0
api("PUT", f"/api/templates/{tpl}", {"spec": spec}, admin)
api("POST", f"/api/classes/{c['id']}/down", None, admin)
while any(s["state"] in ("stopping", "ready") for s in api("GET", "/api/sessions?active=true", None, admin)):
    time.sleep(0.2)

time.sleep(1)
with Host() as h:
    took, times, errors = burst(reference)
print(f"(2) reference, the engine directly: {N} concurrent create+start+port wait: all after {took:.2f} s; "
      f"p50 {pct(times, 50):.2f} s, p99 {pct(times, 99):.2f} s; errors {len(errors)}{': ' + errors[0] if errors else ''}")
print(f"    {h}")
t = time.perf_counter()
def rm(i):
    docker("DELETE", f"/containers/ref{i}?force=1")
ths = [threading.Thread(target=rm, args=(i,)) for i in range(N)]
for th in ths: th.start()
for th in ths: th.join()
print(f"    removal of the {N} (rm -f, concurrent): {time.perf_counter()-t:.2f} s")
PY
