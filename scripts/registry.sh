#!/usr/bin/env bash
# Start/stop a throw-away local OCI registry (Debian package docker-registry,
# github.com/docker/distribution 2.8) for tests and benchmarks.
#
#   scripts/registry.sh start DIR [PORT] [--htpasswd USER:PASS]
#   scripts/registry.sh stop DIR
#   scripts/registry.sh status DIR
#
# start: serves http://127.0.0.1:PORT (never any other address) with
# filesystem storage in DIR/data, deletes enabled, and, with --htpasswd,
# basic auth (bcrypt htpasswd file DIR/htpasswd, made with `htpasswd -B`
# from apache2-utils). Without PORT a free port is picked. Waits until
# GET /v2/ answers 200 (401 with --htpasswd), then writes DIR/pid and
# DIR/port and prints "127.0.0.1:PORT" on stdout. Log: DIR/registry.log,
# config: DIR/config.yml.
# Idempotent: if the registry of DIR is already running (same port if PORT
# is given, same auth mode) it just prints its address; a stale DIR/pid is
# ignored. Data in DIR/data survives stop/start.
#
# stop: kills the registry of DIR (TERM, then KILL after 5 s) and removes
# DIR/pid and DIR/port; fine if it is not running.
#
# Env: REGISTRY_BIN (docker-registry), START_TIMEOUT seconds (15).
set -euo pipefail

prog=registry.sh
die() { echo "$prog: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR [PORT] [--htpasswd USER:PASS] | stop DIR | status DIR"; }

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
port= auth=
while [ $# -gt 0 ]; do
    case $1 in
        --htpasswd) [ $# -ge 2 ] || die "--htpasswd needs USER:PASS"; auth=$2; shift 2 ;;
        --htpasswd=*) auth=${1#--htpasswd=}; shift ;;
        [0-9]*) [ -z "$port" ] || usage; port=$1; shift ;;
        *) usage ;;
    esac
done
if [ -n "$port" ]; then
    [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
        || die "bad port '$port'"
fi
if [ -n "$auth" ]; then
    case $auth in
        ?*:?*) ;;
        *) die "--htpasswd wants USER:PASS, got '$auth'" ;;
    esac
fi

REGISTRY_BIN=${REGISTRY_BIN:-docker-registry}

# pid of DIR's registry if it is alive (and really a registry), else empty.
running_pid() {
    local pid
    [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    # Guard against pid reuse: the process must be serving DIR's config.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(cd "$dir" && pwd)/config.yml" \
        || return 0
    echo "$pid"
}

http_code() {
    curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/v2/" 2>/dev/null || true
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

port_busy() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

do_stop() {
    local pid i
    pid=$(running_pid)
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.1
        fi
    fi
    rm -f "$dir/pid" "$dir/port"
}

# Try to start on $1; returns 0 when up, 2 if the port was taken under us,
# 1 on other failures.
try_start() {
    local p=$1 want code pid i deadline
    local abs
    abs=$(cd "$dir" && pwd)
    mkdir -p "$abs/data"
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: warn"
        echo "  accesslog:"
        echo "    disabled: true"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $abs/data"
        echo "  delete:"
        echo "    enabled: true"
        echo "  maintenance:"
        echo "    uploadpurging:"
        echo "      enabled: false"
        echo "http:"
        echo "  addr: 127.0.0.1:$p"
        echo "  secret: cubby-test-registry-not-secret"
        if [ -n "$auth" ]; then
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: cubby-test"
            echo "    path: $abs/htpasswd"
        fi
    } >"$abs/config.yml"
    if [ -n "$auth" ]; then
        htpasswd -B -b -c "$abs/htpasswd" "${auth%%:*}" "${auth#*:}" 2>/dev/null \
            || die "htpasswd -B failed"
        echo "htpasswd ${auth%%:*}" >"$abs/auth-mode"
    else
        echo none >"$abs/auth-mode"
    fi

    # The registry lets REGISTRY_* environment variables override its config
    # file (e.g. REGISTRY_HTTP_ADDR); drop any the caller has so the config
    # above is what runs.
    local -a unset_env=()
    local v
    for v in $(compgen -e); do
        case $v in REGISTRY_BIN) ;; REGISTRY_*) unset_env+=(-u "$v") ;; esac
    done
    : >"$abs/registry.log"
    env "${unset_env[@]}" "$REGISTRY_BIN" serve "$abs/config.yml" \
        >>"$abs/registry.log" 2>&1 </dev/null &
    pid=$!
    want=200
    [ -n "$auth" ] && want=401
    deadline=$(( $(date +%s) + ${START_TIMEOUT:-15} ))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            if grep -q 'address already in use' "$abs/registry.log"; then return 2; fi
            echo "$prog: docker-registry exited at startup; log $abs/registry.log:" >&2
            sed 's/^/    /' "$abs/registry.log" >&2
            return 1
        fi
        code=$(http_code "$p")
        if [ "$code" = "$want" ]; then break; fi
        if [ "$code" != 000 ]; then
            # Something answers, but not as our registry should.
            kill -KILL "$pid" 2>/dev/null || true
            echo "$prog: 127.0.0.1:$p/v2/ answered HTTP $code, expected $want" >&2
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            echo "$prog: registry on 127.0.0.1:$p not up after ${START_TIMEOUT:-15}s; log $abs/registry.log:" >&2
            sed 's/^/    /' "$abs/registry.log" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "$pid" >"$abs/pid"
    echo "$p" >"$abs/port"
    echo "127.0.0.1:$p"
}

do_start() {
    command -v "$REGISTRY_BIN" >/dev/null \
        || die "$REGISTRY_BIN not found (apt-get install -y docker-registry)"
    command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
    command -v python3 >/dev/null || die "python3 not found"
    if [ -n "$auth" ]; then
        command -v htpasswd >/dev/null \
            || die "htpasswd not found (apt-get install -y apache2-utils)"
    fi
    mkdir -p "$dir" || die "cannot create $dir"

    local pid cur mode wantmode
    pid=$(running_pid)
    if [ -n "$pid" ]; then
        cur=$(cat "$dir/port")
        mode=$(cat "$dir/auth-mode" 2>/dev/null || echo none)
        wantmode=none
        [ -n "$auth" ] && wantmode="htpasswd ${auth%%:*}"
        if [ -n "$port" ] && [ "$port" != "$cur" ]; then
            die "registry of $dir already running on port $cur (pid $pid); stop it first"
        fi
        if [ "$mode" != "$wantmode" ]; then
            die "registry of $dir already running with auth '$mode' (pid $pid); stop it first"
        fi
        if [ -n "$auth" ]; then
            # Same user; refresh the password (the registry rereads the file).
            htpasswd -B -b "$dir/htpasswd" "${auth%%:*}" "${auth#*:}" 2>/dev/null
        fi
        echo "127.0.0.1:$cur"
        return 0
    fi
    rm -f "$dir/pid" "$dir/port"

    local rc attempt p
    if [ -n "$port" ]; then
        port_busy "$port" && die "127.0.0.1:$port is already in use"
        rc=0; try_start "$port" || rc=$?
        [ $rc = 2 ] && die "127.0.0.1:$port is already in use"
        [ $rc = 0 ] || exit 1
        return 0
    fi
    # Free port: ask the kernel, retry if someone grabs it in between.
    for attempt in 1 2 3 4 5; do
        p=$(free_port)
        rc=0; try_start "$p" || rc=$?
        [ $rc = 0 ] && return 0
        [ $rc = 2 ] || exit 1
    done
    die "could not find a free port"
}

case $cmd in
    start) do_start ;;
    stop) [ -z "$port$auth" ] || usage; do_stop ;;
    status)
        pid=$(running_pid)
        if [ -n "$pid" ]; then echo "127.0.0.1:$(cat "$dir/port") pid $pid"; else echo "not running"; exit 1; fi ;;
    *) usage ;;
esac
