#!/usr/bin/env bash
# API latency over the daemon's transports: `ps` through a cubby daemon on its
# Unix socket and on mutual TLS over 127.0.0.1, with the docker CLI and with
# the cubby CLI (--host), against standalone `cubby ps`. One request (docker
# adds a /_ping; cubby adds a /_ping, plus /info only for the default socket).
#
#   bench/remote.sh            # RUNS=30
#
# Env: RUNS (30), CUBBY (target/release/cubby; built with cargo if missing).
# Needs root, openssl, hyperfine, /usr/local/bin/docker. Everything (daemon,
# monitor, temp dir) is removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-30}
CUBBY=${CUBBY:-target/release/cubby}
[ -x "$CUBBY" ] || cargo build --release -p cubby
DOCKER=/usr/local/bin/docker
tmp=$(mktemp -d)
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [ -f "$tmp/run/monitor.sock.lock" ] && kill -9 "$(cat "$tmp/run/monitor.sock.lock")" 2>/dev/null
    rm -rf "$tmp"
    # The (empty) cgroups of the daemon's parent, one per v1 hierarchy.
    for d in /sys/fs/cgroup/*/cubby-bench /sys/fs/cgroup/cubby-bench; do
        [ -d "$d" ] || continue
        rmdir "$d/remote-$$" 2>/dev/null || true
        rmdir "$d" 2>/dev/null || true
    done
}
trap cleanup EXIT

c="$tmp/certs"; mkdir -p "$c"; cd "$c"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=bench-ca 2>/dev/null
for n in server client; do
    openssl req "${ec[@]}" -keyout $n-key.pem -out $n.csr -subj /CN=$n 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
for n in server client; do
    openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days 1 -out $n-cert.pem -extfile $n.ext 2>/dev/null
done
cd - >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sock="$tmp/run/cubby.sock"
"$CUBBY" --root "$tmp/data" --state-dir "$tmp/state" daemon \
    --listen "unix://$sock" --listen "tcp://127.0.0.1:$port" \
    --tls-cert "$c/server-cert.pem" --tls-key "$c/server-key.pem" --tls-ca "$c/ca.pem" \
    --cgroup-parent "cubby-bench/remote-$$" 2>"$tmp/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$tmp/daemon.log"; exit 1; }

export DOCKER_CONFIG="$tmp/docker-config" DOCKER_CLI_HINTS=false
unset DOCKER_HOST DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_CONTEXT CUBBY_HOST
tls_docker="--tlsverify --tlscacert $c/ca.pem --tlscert $c/client-cert.pem --tlskey $c/client-key.pem"
tls_cubby="--tls-ca $c/ca.pem --tls-cert $c/client-cert.pem --tls-key $c/client-key.pem"
base="$CUBBY --root $tmp/data --state-dir $tmp/state"
hyperfine -N --runs "$RUNS" --warmup 3 \
    -n "docker ps (unix)" "$DOCKER -H unix://$sock ps" \
    -n "docker ps (mutual TLS)" "$DOCKER -H tcp://127.0.0.1:$port $tls_docker ps" \
    -n "cubby ps (unix)" "$base --host unix://$sock ps" \
    -n "cubby ps (mutual TLS)" "$base --host tcp://127.0.0.1:$port $tls_cubby ps" \
    -n "cubby ps (standalone)" "$CUBBY --root $tmp/data --state-dir $tmp/state-standalone ps"
