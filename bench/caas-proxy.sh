#!/usr/bin/env bash
# Routing proxy benchmark: `cubby serve` (release build) on a private
# `cubby daemon`, one demo sandbox (busybox httpd on 8080) serving a 1 KiB
# and a 1 MiB file. In one run, interleaved (ROUNDS rounds of every case),
# wrk against:
#   direct  http://SANDBOX:8080/FILE          (the reference)
#   cubby   http://127.0.0.1:PORT/r/SESSION/FILE   (access check per request)
#   nginx   Debian's nginx as the same reverse proxy (proxy_pass, HTTP/1.1
#           upstream keep-alive pool)
# each with keep-alive and with a new connection per request
# (`Connection: close`). Reports the median requests/s per case and the
# ratios cubby/direct and cubby/nginx. Targets (issue 12): cubby >= 90% of
# direct and >= nginx.
# Then latency, interleaved in ROUNDS rounds of ECHOES round trips each:
#   websocket echo RTT through the proxy vs straight to a second sandbox
#   whose app answers the handshake and echoes bytes (target: p50 overhead
#   < 0.2 ms), and terminal keystroke-to-echo through
#   /api/sessions/ID/terminal (one byte typed, its echo by the pty seen;
#   target: p50 < 5 ms).
#
# CPU per request: the serving process's user+system time over each wrk
# run (all its threads; for nginx master and workers) divided by the
# requests wrk completed, median per case (µs/req).
# TIME_WAIT: before each wrk run, the host's TIME_WAIT sockets toward the
# sandbox's app (median per case). busybox httpd closes every connection,
# so every request of every case opens one to it, and the TIME_WAITs its
# closes leave (wrk's direct ones, nginx's, ours; 60 s each) make each
# later connect() to it search longer for a free source port
# (__inet_hash_connect: up to 80% of the proxy's CPU with ~14k of them).
# So the order of the targets rotates from round to round (no target
# always runs right after the same one), and the bench sets
# net.ipv4.tcp_tw_reuse=1 while it runs (restored on exit; TW_REUSE=0
# keeps the host's value): a connect() may then take a port whose
# TIME_WAIT is older than 1 s. Without it ~14k TIME_WAITs (the whole even
# half of the ephemeral range) fill up within one 5 s run and every later
# run of every target measures the port search: direct and nginx fell to
# ~500 req/s at ~1.9 ms CPU per request.
# A/B: CUBBY_B=/path/to/other/cubby starts a second `cubby serve` of that
# binary on the same database and engine (so it routes the same session)
# and adds it as "cubby_b" to every round, interleaved with the others;
# A_ARGS / B_ARGS add serve flags to either (e.g. B_ARGS="--proxy-threads 0"
# with CUBBY_B=$CUBBY compares two settings of one binary).
#
#   bench/caas-proxy.sh                 # ROUNDS=3 DURATION=5 CONNS=16
# Env: ROUNDS, DURATION (s per wrk run), CONNS, THREADS (2), ECHOES (1000),
# CUBBY, CUBBY_B, A_ARGS, B_ARGS, KEEP=1, ONLY=latency (skip wrk),
# PERF=1 (profiles first, see below), TW_REUSE=0 (see TIME_WAIT),
# SYSCALLS=1 and STRACE=1 (see below), NGINX_WORKERS (default: as many as
# cubby's default proxy threads, half the cores; give A_ARGS/B_ARGS
# "--proxy-threads N" to compare others).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
ECHOES=${ECHOES:-1000}

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_require
for t in python3 wrk nginx docker; do
    command -v $t >/dev/null || die "$t missing (apt-get install -y python3 wrk nginx-light; the docker CLI)"
done
bench_cubby
nginx_pid=
serve_b_pid=
tw_reuse_was=
bench_extra_cleanup() {
    [ -n "$tw_reuse_was" ] && sysctl -qw net.ipv4.tcp_tw_reuse="$tw_reuse_was"
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    [ -n "$serve_b_pid" ] && kill -9 "$serve_b_pid" 2>/dev/null && wait "$serve_b_pid" 2>/dev/null
}
# user+system clock ticks of a process and its children's threads (pids).
# user and system clock ticks, as "USER SYS".
cpu_split() {
    local u=0 s=0 p pu ps
    for p in "$@"; do
        read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0)
        u=$((u + pu)); s=$((s + ps))
    done
    echo "$u $s"
}
cpu_ticks() {
    local u s
    read -r u s < <(cpu_split "$@")
    echo $((u + s))
}
# wrk's headers for TARGET and CONN (keepalive|close), into the array hdr.
wrk_headers() {
    hdr=()
    [ "$2" = close ] && hdr=(-H "Connection: close")
    [ "${1#cubby}" != "$1" ] && hdr+=(-H "Authorization: Bearer $token")
    return 0
}
# TARGET's serving processes as perf's -p list.
pid_csv() { tr ' ' ',' <<<"${pids[$1]}" | sed 's/,*$//'; }
bench_init proxy cx 214

echo "== preparing: daemon, demo image, cubby serve, one sandbox, nginx"
bench_daemon
# shellcheck disable=SC2086 # A_ARGS/B_ARGS are word lists
bench_serve --path-routing ${A_ARGS:-}
if [ -n "${CUBBY_B:-}" ]; then
    port_b=$(free_port)
    "$CUBBY_B" --root "$work/data_b" serve --listen "127.0.0.1:$port_b" \
        --engine "unix://$work/run/cubby.sock" --stop-grace 1 --path-routing ${B_ARGS:-} \
        >"$work/serve_b.log" 2>&1 &
    serve_b_pid=$!
    bench_wait_health "$port_b"
fi

# Admin token, a session for student1 in demo101, its address.
read -r token session addr wsession waddr < <(python3 - "$port" "$admin_pw" <<'PY'
import http.client, json, sys
port, pw = int(sys.argv[1]), sys.argv[2]
def api(method, path, body=None, token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); out = r.read()
    if r.status >= 400: raise SystemExit(f"bench: {method} {path}: {r.status} {out[:300]!r}")
    return json.loads(out)
tok = api("POST", "/api/auth/login", {"username": "admin", "password": pw})["access_token"]
cls = [c for c in api("GET", "/api/classes", token=tok) if c["code"] == "demo101"][0]
stu = [u for u in api("GET", f"/api/classes/{cls['id']}/students", token=tok) if u["username"] == "student1"][0]
s = api("POST", "/api/sessions?wait=true", {"class_id": cls["id"], "student_id": stu["id"]}, token=tok)
if s["state"] != "ready": raise SystemExit(f"bench: session {s}")
# A second class whose template's app answers a websocket handshake, then
# echoes every byte (busybox nc + sh, as in tests/caas_web.rs).
app = r'''cr=$(printf '\r')
: > /tmp/req.$$
while IFS= read -r line; do line=${line%"$cr"}; echo "$line" >> /tmp/req.$$; [ -z "$line" ] && break; done
key=$(grep -i '^sec-websocket-key:' /tmp/req.$$ | cut -d ':' -f 2 | tr -d ' \r')
accept=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -d ' ' -f 1 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
exec cat
'''
import base64
image = api("GET", f"/api/templates/{cls['template_id']}", token=tok)["spec"]["image"]
tpl = api("POST", "/api/templates", {"name": "ws-echo", "spec": {"image": image, "port": 8080, "memory_bytes": 64 << 20, "cpus": 0.5, "pids": 64,
      "env": ["APP=" + base64.b64encode(app.encode()).decode()],
      "command": ["sh", "-c", "echo \"$APP\" | base64 -d > /tmp/app.sh && exec nc -ll -p 8080 -e /bin/sh /tmp/app.sh"]}}, token=tok)
wcls = api("POST", "/api/classes", {"name": "ws bench", "code": "wsbench", "capacity": 2, "template_id": tpl["id"]}, token=tok)
api("POST", f"/api/classes/{wcls['id']}/students", {"username": "student2"}, token=tok)
stu2 = [u for u in api("GET", f"/api/classes/{wcls['id']}/students", token=tok) if u["username"] == "student2"][0]
w = api("POST", "/api/sessions?wait=true", {"class_id": wcls["id"], "student_id": stu2["id"]}, token=tok)
if w["state"] != "ready": raise SystemExit(f"bench: session {w}")
print(tok, s["id"], s["address"], w["id"], w["address"])
PY
)
DOCKER_HOST="unix://$work/run/cubby.sock" docker exec "caas-$session" sh -c \
    'head -c 1024 /dev/zero > /workspace/1k && head -c 1048576 /dev/zero > /workspace/1m'

# nginx gets as many workers as `cubby serve` has proxy threads by default
# (half the cores, at least one); NGINX_WORKERS overrides.
nginx_workers=${NGINX_WORKERS:-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
nport=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NG
worker_processes $nginx_workers;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    upstream sandbox { server $addr:8080; keepalive 32; }
    server {
        listen 127.0.0.1:$nport;
        location /r/$session/ {
            proxy_pass http://sandbox/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_buffering off;
        }
    }
}
NG
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
sleep 0.5

declare -A url pids
url[direct]="http://$addr:8080"
url[cubby]="http://127.0.0.1:$port/r/$session"
url[nginx]="http://127.0.0.1:$nport/r/$session"
pids[cubby]=$serve_pid
pids[nginx]="$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"
targets="direct cubby nginx"
if [ -n "${CUBBY_B:-}" ]; then
    url[cubby_b]="http://127.0.0.1:$port_b/r/$session"
    pids[cubby_b]=$serve_b_pid
    targets="direct cubby cubby_b nginx"
fi
hz=$(getconf CLK_TCK)
for t in $targets; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "${url[$t]}/1k")
    [ "$code" = 200 ] || die "$t: GET /1k answered $code"
done

if [ "${TW_REUSE:-1}" = 1 ]; then
    tw_reuse_was=$(sysctl -n net.ipv4.tcp_tw_reuse)
    sysctl -qw net.ipv4.tcp_tw_reuse=1
fi
echo "== net.ipv4.tcp_tw_reuse = $(sysctl -n net.ipv4.tcp_tw_reuse) (was ${tw_reuse_was:-unchanged})"

# PERF=1: first a profile of the 1 KiB new-connection case through cubby
# and through nginx (perf record -g of the serving processes during one wrk
# run each); reports in $work/perf-TARGET.txt (KEEP=1 keeps them).
# PERF_ARGS replaces `-g` (e.g. "-e probe_libc:malloc --call-graph dwarf"
# for where the heap is called from), PERF_KEEPALIVE=1 profiles the
# keep-alive case instead.
if [ "${PERF:-0}" = 1 ]; then
    command -v perf >/dev/null || die "perf missing (apt-get install -y linux-perf)"
    read -ra perf_args <<<"${PERF_ARGS:--g}"
    for t in cubby nginx; do
        if [ "${PERF_KEEPALIVE:-0}" = 1 ]; then wrk_headers "$t" keepalive; else wrk_headers "$t" close; fi
        perf record -q "${perf_args[@]}" -o "$work/perf-$t.data" -p "$(pid_csv "$t")" \
            -- sleep "$DURATION" 2>/dev/null &
        perf_pid=$!
        wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "${url[$t]}/1k" | awk '/Requests\/sec/ {print "perf run '"$t"': " $2 " req/s"}'
        wait "$perf_pid" || true
        perf report -i "$work/perf-$t.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null \
            | awk '/%/ && !/^#/ && n++ < 60' > "$work/perf-$t.txt"
        echo "== perf $t (top of $work/perf-$t.txt)"
        awk 'NR <= 25' "$work/perf-$t.txt"
    done
fi

# SYSCALLS=1: system calls per request of the serving processes (perf
# stat on their syscall tracepoints) during one 1 KiB run each through
# cubby and nginx, keep-alive and new connection per request.
if [ "${SYSCALLS:-0}" = 1 ]; then
    command -v perf >/dev/null || die "perf missing (apt-get install -y linux-perf)"
    evs=
    for c in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_ctl \
        socket connect close accept4 getsockopt setsockopt futex shutdown getpeername \
        getsockname ioctl sched_yield madvise mmap munmap brk; do
        evs+="syscalls:sys_enter_$c,"
    done
    # Heap calls too where libc's are probed (perf probe -x LIBC --add malloc,
    # likewise free and realloc).
    for c in malloc free realloc; do
        perf probe -l 2>/dev/null | grep -q "probe_libc:$c " && evs+="probe_libc:$c,"
    done
    for conn in keepalive close; do
        for t in cubby nginx; do
            wrk_headers "$t" "$conn"
            perf stat -x, -o "$work/sys-$t-$conn.csv" -e "${evs%,}" \
                -p "$(pid_csv "$t")" -- sleep "$DURATION" 2>/dev/null &
            stat_pid=$!
            # shellcheck disable=SC2086 # pid lists
            read -r u0 s0 < <(cpu_split ${pids[$t]})
            n=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "${url[$t]}/1k" | awk '/requests in/ {print $1}')
            # shellcheck disable=SC2086
            read -r u1 s1 < <(cpu_split ${pids[$t]})
            wait "$stat_pid" || true
            echo "== syscalls per request, 1k $conn, $t ($n requests; CPU µs/req user $(( (u1 - u0) * 1000000 / hz / n )), system $(( (s1 - s0) * 1000000 / hz / n )), counted while traced)"
            awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); sub("probe_libc:", "libc ", $3); printf "  %-12s %6.2f\n", $3, $1 / n; tot += $1 } END { printf "  %-12s %6.2f\n", "total", tot / n }' "$work/sys-$t-$conn.csv"
        done
    done
fi

# STRACE=1: the system calls of the serving processes for one 1 KiB
# request through cubby and through nginx (on a connection warmed by one
# request before), printed.
if [ "${STRACE:-0}" = 1 ]; then
    for t in cubby nginx; do
        args=()
        for p in ${pids[$t]}; do args+=(-p "$p"); done
        strace -f -qq -e trace=network,read,write,readv,writev,epoll_wait,epoll_ctl,close,futex,ioctl \
            -o "$work/strace-$t.txt" "${args[@]}" &
        st_pid=$!
        sleep 1
        hdr=(-H "X-Bench: 1")
        [ "$t" = cubby ] && hdr=(-H "Authorization: Bearer $token")
        curl -s -o /dev/null "${hdr[@]}" "${url[$t]}/1k" "${url[$t]}/1k"
        sleep 0.5
        kill "$st_pid"; wait "$st_pid" 2>/dev/null || true
        echo "== strace $t (two requests on one connection)"
        cat "$work/strace-$t.txt"
    done
fi

results="$work/results.txt"
: > "$results"
if [ "${ONLY:-}" != latency ]; then
echo "== wrk: ${DURATION}s per run, $CONNS connections, $THREADS threads, $ROUNDS rounds (interleaved)"
read -ra order <<<"$targets"
for round in $(seq "$ROUNDS"); do
    for file in 1k 1m; do
        for conn in keepalive close; do
            # Each round starts with another target: the TIME_WAITs a run
            # leaves toward the app (60 s) weigh on the next run, so no
            # target always follows the same one.
            for i in "${!order[@]}"; do
                t=${order[$(( (i + round - 1) % ${#order[@]} ))]}
                wrk_headers "$t" "$conn"
                tw=$(ss -Htan state time-wait dst "$addr:8080" | wc -l)
                # shellcheck disable=SC2086 # pid lists
                c0=$(cpu_ticks ${pids[$t]:-})
                out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "${url[$t]}/$file")
                # shellcheck disable=SC2086
                c1=$(cpu_ticks ${pids[$t]:-})
                rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
                n=$(awk '/requests in/ {print $1}' <<<"$out")
                us=0
                [ -n "${pids[$t]:-}" ] && [ "${n:-0}" -gt 0 ] && us=$(( (c1 - c0) * 1000000 / hz / n ))
                echo "$file $conn $t ${rps:-0} $us $tw" >> "$results"
                echo "round $round: $file $conn $t: ${rps:-0} req/s, ${us} µs CPU/req, $tw TIME_WAIT to the app before"
            done
        done
    done
done

python3 - "$results" "$targets" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
targets = sys.argv[2].split()
med, cpu, tw = {}, {}, {}
for f, c, t, r, us, w in rows:
    med.setdefault((f, c, t), []).append(float(r))
    cpu.setdefault((f, c, t), []).append(int(us))
    tw.setdefault((f, c, t), []).append(int(w))
m = lambda d, k: statistics.median(d[k])
print("\n== medians (requests/s; CPU µs per request of the serving process)")
head = f"{'case':16}" + "".join(f"{t:>10}" for t in targets)
head += "".join(f"{t + '/direct':>16}" for t in targets if t.startswith("cubby"))
head += "".join(f"{t + '/nginx':>15}" for t in targets if t.startswith("cubby"))
if "cubby_b" in targets: head += f"{'b/a':>7}"
head += "   µs/req: " + " ".join(t for t in targets if t != "direct")
head += "   TIME_WAIT: " + " ".join(targets)
print(head)
for f in ("1k", "1m"):
    for c in ("keepalive", "close"):
        v = {t: m(med, (f, c, t)) for t in targets}
        line = f"{f + ' ' + c:16}" + "".join(f"{v[t]:10.0f}" for t in targets)
        line += "".join(f"{v[t] / v['direct'] if v['direct'] else 0:16.2f}" for t in targets if t.startswith("cubby"))
        line += "".join(f"{v[t] / v['nginx'] if v['nginx'] else 0:15.2f}" for t in targets if t.startswith("cubby"))
        if "cubby_b" in targets: line += f"{v['cubby_b'] / v['cubby'] if v['cubby'] else 0:7.2f}"
        line += "   " + " ".join(f"{m(cpu, (f, c, t)):.0f}" for t in targets if t != "direct")
        line += "   " + " ".join(f"{m(tw, (f, c, t)):.0f}" for t in targets)
        print(line)
PY
fi

echo "== latency: $ROUNDS rounds of $ECHOES round trips each (interleaved)"
python3 - "$port" "$token" "$session" "$wsession" "$waddr" "$ROUNDS" "$ECHOES" "${port_b:-0}" <<'PY'
import base64, os, socket, statistics, sys, time
port, token, session, wsession, waddr = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rounds, n, port_b = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])

def ws_connect(host, p, path, auth):
    s = socket.create_connection((host, p))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    hdr = f"GET {path} HTTP/1.1\r\nHost: {host}:{p}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    if auth: hdr += f"Authorization: Bearer {auth}\r\n"
    s.sendall((hdr + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(4096)
        if not c: raise SystemExit(f"bench: {path}: closed during the handshake: {buf!r}")
        buf += c
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n")[0]: raise SystemExit(f"bench: {path}: {head!r}")
    return s, rest

def frame(payload, opcode=2):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body

def recv_exact(s, k, pending):
    while len(pending) < k:
        c = s.recv(65536)
        if not c: raise SystemExit("bench: connection closed")
        pending += c
    return pending[:k], pending[k:]

def echo_rtts(host, p, path, auth):
    # The app echoes raw bytes: our masked frame comes back as sent.
    s, pending = ws_connect(host, p, path, auth)
    out = []
    for i in range(n):
        f = frame(b"ping-%06d" % i)
        t0 = time.perf_counter_ns()
        s.sendall(f)
        got, pending = recv_exact(s, len(f), pending)
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if got != f: raise SystemExit(f"bench: echo mismatch {got!r}")
    s.close()
    return out

def read_frame(s, pending):
    hdr, pending = recv_exact(s, 2, pending)
    ln = hdr[1] & 0x7f
    if ln == 126:
        ext, pending = recv_exact(s, 2, pending); ln = int.from_bytes(ext, "big")
    elif ln == 127:
        ext, pending = recv_exact(s, 8, pending); ln = int.from_bytes(ext, "big")
    payload, pending = recv_exact(s, ln, pending)
    return hdr[0] & 0x0f, payload, pending

def keystrokes(port):
    s, pending = ws_connect("127.0.0.1", port, f"/api/sessions/{session}/terminal", token)
    seen = b""
    while b"$ " not in seen:
        op, pl, pending = read_frame(s, pending); seen += pl
    out = []
    for i in range(n):
        if i % 50 == 49:
            # Ctrl-U: an empty line again, its echo drained.
            s.sendall(frame(b"\x15"))
            time.sleep(0.02)
            s.settimeout(0.05)
            try:
                while True:
                    c = s.recv(65536)
                    if not c: break
            except socket.timeout:
                pass
            s.settimeout(None); pending = b""
        t0 = time.perf_counter_ns()
        s.sendall(frame(b"x"))
        got = b""
        while b"x" not in got:
            op, pl, pending = read_frame(s, pending); got += pl
        out.append((time.perf_counter_ns() - t0) / 1e6)
    s.close()
    return out

p50 = lambda xs: statistics.median(xs)
ports = {"cubby": port}
if port_b: ports["cubby_b"] = port_b
direct, proxied, keys = [], {k: [] for k in ports}, {k: [] for k in ports}
for r in range(rounds):
    d = p50(echo_rtts(waddr, 8080, "/", None))
    direct.append(d)
    line = f"round {r + 1}: ws echo p50 direct {d:.3f} ms"
    for name, p in ports.items():
        c = p50(echo_rtts("127.0.0.1", p, f"/r/{wsession}/", token))
        k = p50(keystrokes(p))
        proxied[name].append(c); keys[name].append(k)
        line += f"; {name}: ws echo {c:.3f} ms, keystroke-to-echo {k:.3f} ms"
    print(line)
dm = p50(direct)
print("\n== latency medians of the per-round p50s")
for name in ports:
    cm, km = p50(proxied[name]), p50(keys[name])
    print(f"{name}: websocket echo RTT: direct {dm:.3f} ms, through {name} {cm:.3f} ms, overhead {cm - dm:.3f} ms (target < 0.2), ratio {cm / dm:.2f}")
    print(f"{name}: terminal keystroke-to-echo: {km:.3f} ms (target < 5)")
PY
