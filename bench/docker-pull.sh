#!/usr/bin/env bash
# Pull through the Docker API vs the CLI: `docker pull` served by `cubby
# daemon` against `cubby pull`, both into a cold store, from a local registry
# on 127.0.0.1 (test/big: ~138 MB uncompressed in 5 layers).
#
#   bench/docker-pull.sh            # ITER=5
#   ITER=3 bench/docker-pull.sh
#
# Measures, interleaved, ITER samples of:
#   (a) cubby --root NEWDIR pull -q REF               (the CLI, no daemon)
#   (b) docker pull -q REF through cubby daemon      (store emptied by
#       `docker rmi` after each sample: rmi removes blobs and layers)
#   (a) and (b) alternate in going first, with a sync between them.
#   (c) docker pull -q REF again                      ("Image is up to date")
# then one raw POST /images/create (curl) to count the progress stream's
# lines and bytes. Prints medians. Everything (daemon, monitor, registry,
# temp dir) is removed on exit.
#
# Env: ITER (5), CUBBY (target/release/cubby, built if missing),
#      REGISTRY_DIR (keep the registry's data between runs), KEEP=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-5}
die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cubby daemon needs it)"
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "ITER must be a positive number"
for t in docker curl python3 docker-registry skopeo umoci; do
    command -v "$t" >/dev/null || die "$t missing"
done
cubby=${CUBBY:-$repo/target/release/cubby}
if [ ! -x "$cubby" ]; then
    (cd "$repo" && cargo build --release -p cubby >&2) || die "cargo build failed"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cubby-pullbench.XXXXXX")
regdir=${REGISTRY_DIR:-$work/registry}
daemon_pid=
cleanup() {
    set +e
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    if [ -f "$work/run/monitor.sock.lock" ]; then
        kill "$(cat "$work/run/monitor.sock.lock")" 2>/dev/null
    fi
    "$repo/scripts/registry.sh" stop "$regdir" >/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

addr=$("$repo/scripts/registry.sh" start "$regdir" | tail -1)
"$repo/scripts/mk-test-images.sh" --only big "$addr" >/dev/null
ref=$addr/test/big:latest

mkdir -p "$work/run"
"$cubby" --root "$work/data" --state-dir "$work/state" daemon \
    --listen "unix://$work/run/cubby.sock" --cgroup-parent cubby-pullbench \
    >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/run/cubby.sock" ] && break; sleep 0.1; done
[ -S "$work/run/cubby.sock" ] || die "cubby daemon did not start: $(cat "$work/daemon.log")"
export DOCKER_HOST=unix://$work/run/cubby.sock DOCKER_CONFIG=$work/docker-config

now() { date +%s.%N; }
a=() b=() c=()
for i in $(seq "$ITER"); do
    sync # the removals' writeback must not land in the next pull's syncfs
    cli() { t0=$(now); "$cubby" --root "$work/cli" pull -q "$ref" >/dev/null; t1=$(now); a+=("$(echo "$t1 - $t0" | bc)"); }
    api() { t0=$(now); docker pull -q "$ref" >/dev/null; t1=$(now); b+=("$(echo "$t1 - $t0" | bc)"); }
    # Alternate which goes first: the second finds the registry's files cached.
    if [ $((i % 2)) = 1 ]; then cli; sync; api; else api; sync; cli; fi
    t0=$(now); docker pull -q "$ref" >/dev/null; t1=$(now)
    c+=("$(echo "$t1 - $t0" | bc)")
    docker rmi "$ref" >/dev/null
    rm -rf "$work/cli"
    echo "bench: sample $i: cli ${a[-1]} s, docker pull ${b[-1]} s, up to date ${c[-1]} s" >&2
done
curl -s --unix-socket "$work/run/cubby.sock" -X POST \
    "http://docker/v1.43/images/create?fromImage=$addr/test/big&tag=latest" -o "$work/stream.json"
lines=$(wc -l <"$work/stream.json")
bytes=$(wc -c <"$work/stream.json")
python3 - "$lines" "$bytes" "${a[*]}" "${b[*]}" "${c[*]}" <<'EOF'
import statistics, sys
lines, size = sys.argv[1], sys.argv[2]
med = lambda s: statistics.median(float(x) for x in s.split())
a, b, c = (med(s) for s in sys.argv[3:6])
print(f"cubby pull (CLI, cold)        median {a:.3f} s")
print(f"docker pull via API (cold)    median {b:.3f} s  ({b / a:.2f}x the CLI)")
print(f"docker pull, up to date       median {c:.3f} s")
print(f"progress stream of one pull: {lines} lines, {size} bytes")
EOF
