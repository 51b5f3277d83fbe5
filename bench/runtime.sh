#!/usr/bin/env bash
# Container lifecycle benchmark: cubby-oci vs crun vs runc.
#
#   bench/runtime.sh                    # all runtimes, 10 warm-up + 50 runs each
#   ITER=20 RUNTIMES="runc crun" bench/runtime.sh
#
# Each sample is one full lifecycle of a busybox bundle running /bin/true:
# `RT --root DIR run -b BUNDLE ID` (create+start+wait+delete), plus
# `RT --root DIR delete -f ID` only if `run` left state behind in DIR (that
# time is included and counted). Every sample gets a fresh, empty --root
# directory and a unique container id. Runtimes are interleaved (A B C A B C
# ...) so drift in machine load hits them all alike.
#
# crun refuses cgroup v1/v2 hybrid hosts, so where /sys/fs/cgroup/unified is
# mounted it runs as
#   unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec crun ...'
# and the wrapper alone ("crun-wrap": same command ending in the shell builtin
# `true`) is measured too; crun's median is reported raw and minus the
# wrapper's median.
#
# Peak RSS comes from separate, untimed lifecycles (RSS_ITER, default 5, per
# runtime) run under `/usr/bin/time -f %M` (Debian package `time`): the
# largest resident set of the runtime process or any descendant it reaped
# (runc init / crun's container child). It is not taken from the timed runs
# with wait4(2) because a child of python3 inherits python's RSS high-water
# mark through fork+exec; GNU time's own floor is ~1 MiB
# (`/usr/bin/time -f %M /bin/true`, printed as "floor").
#
# Two phases (LOAD=both, the default): "quiet", then "loaded", the same
# interleaved comparison while a CPU hog started by the bench (a shell busy
# loop) keeps one core busy. LOAD=quiet or LOAD=loaded runs one. A summary
# prints both phases' medians and cubby's ratios to crun and runc.
#
# Env: ITER (50), WARMUP (10), RSS_ITER (5), RUNTIMES ("cubby crun runc"), LOAD (both),
#      CUBBY_OCI (target/release/cubby-oci; built with cargo if missing),
#      RUNC (runc), CRUN (crun), KEEP=1 keeps the temp dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

ITER=${ITER:-50}
WARMUP=${WARMUP:-10}
RUNTIMES=${RUNTIMES:-"cubby crun runc"}
LOAD=${LOAD:-both}
case $LOAD in both|quiet|loaded) ;; *) echo "bench: LOAD must be both, quiet or loaded" >&2; exit 1 ;; esac

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (runc/crun need it for rootful containers)"
command -v python3 >/dev/null || die "python3 missing (apt-get install -y python3)"

work=$(mktemp -d /tmp/cubby-bench.XXXXXX)
# State roots on tmpfs, like every runtime's default (/run/runc, /run/crun,
# /run/cubby-oci): the bundle stays on disk, the state does not.
states=$(mktemp -d /run/cubby-bench-state.XXXXXX)
ln -s "$states" "$work/roots"
cleanup() {
    local rc=$?
    if [ "${KEEP:-0}" = 1 ]; then
        echo "bench: kept $work" >&2
    else
        # Best effort: kill/delete anything a failed runtime left behind.
        for r in "$work"/roots/*/*; do
            [ -d "$r" ] || continue
            for c in "$r"/*; do
                [ -e "$c" ] || continue
                id=${c##*/}
                "${RUNC:-runc}" --root "$r" delete -f "$id" >/dev/null 2>&1 || true
            done
        done
        rm -rf "$work" "$states"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rts=()
for rt in $RUNTIMES; do
    case $rt in
        cubby)
            bin=${CUBBY_OCI:-$repo/target/release/cubby-oci}
            if [ ! -x "$bin" ] && [ -z "${CUBBY_OCI:-}" ]; then
                echo "== building cubby-oci (cargo build --release -p cubby-oci)"
                (cd "$repo" && cargo build --release -p cubby-oci) || die "cargo build failed"
            fi
            [ -x "$bin" ] || die "cubby-oci not found at $bin"
            rts+=("cubby=$bin") ;;
        runc)
            bin=$(command -v "${RUNC:-runc}") || die "runc not found (apt-get install -y runc)"
            rts+=("runc=$bin") ;;
        crun)
            bin=$(command -v "${CRUN:-crun}") || die "crun not found (apt-get install -y crun)"
            rts+=("crun=$bin") ;;
        *) die "unknown runtime '$rt' (choose from: cubby crun runc)" ;;
    esac
done
[ ${#rts[@]} -gt 0 ] || die "RUNTIMES is empty"

echo "== bundle"
"$repo/scripts/mk-bundle.sh" "$work/bundle" /bin/true >/dev/null

hybrid=0
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then hybrid=1; fi

echo "== host: $(uname -r), $(nproc) cpus, cgroup: $( [ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || { [ $hybrid = 1 ] && echo 'v1 hybrid' || echo v1; } )"
for kv in "${rts[@]}"; do
    name=${kv%%=*}; bin=${kv#*=}
    case $name in
        runc|crun) echo "   $name: $bin ($("$bin" --version 2>/dev/null | head -n1))" ;;
        *) echo "   $name: $bin" ;;
    esac
done

python3 - "$work" "$WARMUP" "$ITER" "$hybrid" "${RSS_ITER:-5}" "$LOAD" "${rts[@]}" <<'PY'
import json, os, shutil, statistics, sys, time

work, warmup, iters, hybrid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
rss_iters = int(sys.argv[5])
LOAD = sys.argv[6]
rts = [a.split("=", 1) for a in sys.argv[7:]]
GNU_TIME = "/usr/bin/time"
bundle = os.path.join(work, "bundle")
UNIFIED = "/sys/fs/cgroup/unified"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
DEVNULL = os.open(os.devnull, os.O_RDWR)


def crun_wrap(inner):
    return [UNSHARE, "-m", "--propagation", "private", "sh", "-c",
            f"umount {UNIFIED} && {inner}"]


def sh_quote(a):
    return "'" + a.replace("'", "'\\''") + "'"


def run_argv(name, binary, root, cid, bundle_dir):
    argv = [binary, "--root", root, "run", "-b", bundle_dir, cid]
    if name == "crun" and hybrid:
        return crun_wrap("exec " + " ".join(sh_quote(a) for a in argv))
    return argv


def delete_argv(name, binary, root, cid):
    argv = [binary, "--root", root, "delete", "-f", cid]
    if name == "crun" and hybrid:
        return crun_wrap("exec " + " ".join(sh_quote(a) for a in argv))
    return argv


def spawn_wait(argv, quiet=True):
    """Run argv; return (exit status, wall seconds)."""
    fa = [(os.POSIX_SPAWN_DUP2, DEVNULL, 0)]
    if quiet:
        fa += [(os.POSIX_SPAWN_DUP2, DEVNULL, 1), (os.POSIX_SPAWN_DUP2, DEVNULL, 2)]
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
    _, status = os.waitpid(pid, 0)
    dt = (time.perf_counter_ns() - t0) / 1e9
    return os.waitstatus_to_exitcode(status), dt


def peak_rss(argv):
    """Run argv under GNU time; return (exit status, max RSS KiB or None)."""
    out = os.path.join(work, "time.out")
    code, _ = spawn_wait([GNU_TIME, "-q", "-f", "%M", "-o", out] + argv)
    try:
        with open(out) as f:
            return code, int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return code, None


def lifecycle(name, binary, root, cid, timed=True):
    """One lifecycle; returns (exit status, seconds, rss KiB or None, deleted?)."""
    if name == "crun-wrap":
        argvs = [crun_wrap("true")]
    else:
        argvs = [run_argv(name, binary, root, cid, bundle)]
    code, dt, mx, deleted = 0, 0.0, None, False
    for k in range(2):
        if k == 1:
            # run left state behind: delete is part of the lifecycle
            if name == "crun-wrap" or not os.listdir(root):
                break
            argvs.append(delete_argv(name, binary, root, cid))
            deleted = True
        if timed:
            c, t = spawn_wait(argvs[k])
            dt += t
        else:
            c, m = peak_rss(argvs[k])
            if m is not None:
                mx = max(mx or 0, m)
        code = code or c
    return code, dt, mx, deleted


# --- sanity check: does each runtime really run a container? -------------
check = os.path.join(work, "check")
os.makedirs(check)
with open(os.path.join(bundle, "config.json")) as f:
    cfg = json.load(f)
cfg["root"]["path"] = os.path.join(bundle, "rootfs")
cfg["process"]["args"] = ["/bin/sh", "-c", "exit 7"]
with open(os.path.join(check, "config.json"), "w") as f:
    json.dump(cfg, f)

seq = 0
def new_root(name):
    global seq
    seq += 1
    root = os.path.join(work, "roots", name, str(seq))
    os.makedirs(root)
    return root, f"bench-{os.getpid()}-{name}-{seq}"

ok = []
for name, binary in rts:
    root, cid = new_root(name)
    code, _ = spawn_wait(run_argv(name, binary, root, cid, check), quiet=False)
    if os.listdir(root):
        spawn_wait(delete_argv(name, binary, root, cid))
    if code != 7:
        print(f"!! {name}: container `sh -c 'exit 7'` exited {code}, not 7: "
              f"{name} does not run containers (yet); leaving it out", flush=True)
        continue
    ok.append((name, binary))

entries = list(ok)
if hybrid and any(n == "crun" for n, _ in ok):
    entries.append(("crun-wrap", None))
if not ok:
    print("!! no runtime passed the sanity check", file=sys.stderr)
    sys.exit(1)

def phase(label, with_rss):
    """One interleaved comparison; returns ({runtime: median seconds}, crun net median)."""
    print(f"== {label}: {warmup} warm-up + {iters} measured lifecycles each, interleaved: "
          + " ".join(n for n, _ in entries), flush=True)

    samples = {n: [] for n, _ in entries}
    rss = {n: [] for n, _ in entries}
    deletes = {n: 0 for n, _ in entries}
    failures = {n: 0 for n, _ in entries}

    def one(name, binary, timed):
        root, cid = new_root(name)
        code, dt, mx, deleted = lifecycle(name, binary, root, cid, timed)
        shutil.rmtree(root, ignore_errors=True)
        if code != 0:
            failures[name] += 1
            if failures[name] > 3:
                print(f"!! {name}: too many failures (last exit {code}); aborting", file=sys.stderr)
                sys.exit(1)
            return None
        return dt, mx, deleted

    for i in range(warmup + iters):
        for name, binary in entries:
            r = one(name, binary, True)
            if r is not None and i >= warmup:
                samples[name].append(r[0])
                deletes[name] += r[2]
        if i + 1 == warmup:
            print("   warm-up done", flush=True)
        elif i + 1 > warmup and (i + 1 - warmup) % 10 == 0:
            print(f"   {i + 1 - warmup}/{iters}", flush=True)

    rss_floor = None
    if not with_rss:
        pass
    elif os.access(GNU_TIME, os.X_OK) and rss_iters > 0:
        _, rss_floor = peak_rss(["/bin/true"])
        print(f"   peak RSS: {rss_iters} more lifecycles each under {GNU_TIME} -f %M", flush=True)
        for _ in range(rss_iters):
            for name, binary in entries:
                r = one(name, binary, False)
                if r is not None and r[1] is not None:
                    rss[name].append(r[1])
    else:
        print(f"!! {GNU_TIME} missing (apt-get install -y time): no peak RSS", flush=True)


    def p90(xs):
        s = sorted(xs)
        k = max(0, -(-9 * len(s) // 10) - 1)  # nearest-rank
        return s[k]

    ms = lambda s: f"{s * 1000:8.2f}"
    print()
    print(f"-- {label}")
    print(f"{'runtime':<10} {'n':>4} {'median ms':>10} {'p90 ms':>9} {'mean ms':>9} {'min ms':>9} {'stdev':>8} {'peakRSS KiB':>12} {'deletes':>8} {'fails':>6}")
    med = {}
    for name, _ in entries:
        xs = samples[name]
        if not xs:
            print(f"{name:<10} no samples")
            continue
        med[name] = statistics.median(xs)
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        print(f"{name:<10} {len(xs):>4} {ms(med[name]):>10} {ms(p90(xs)):>9} {ms(statistics.fmean(xs)):>9} "
              f"{ms(min(xs)):>9} {ms(sd):>8} {(max(rss[name]) if rss[name] else '-'):>12} {deletes[name]:>8} {failures[name]:>6}")

    crun_net = None
    if "crun" in med:
        if "crun-wrap" in med:
            crun_net = med["crun"] - med["crun-wrap"]
            print()
            print(f"crun median raw {med['crun']*1000:.2f} ms; wrapper alone (unshare -m + sh + umount) "
                  f"{med['crun-wrap']*1000:.2f} ms; crun minus wrapper ~ {crun_net*1000:.2f} ms")
            print("  (crun will not start on this cgroup v1/v2 hybrid host, so it runs behind a wrapper that")
            print("   unshares a mount namespace and unmounts cgroup2 there; the difference of medians")
            print("   estimates crun's own cost: it is approximate, since the wrapper's time varies")
            print("   independently, and the new mount namespace makes crun's own later unshare slightly")
            print("   cheaper, so the true crun cost on a pure v1 or v2 host may differ by a little.)")
        else:
            crun_net = med["crun"]

    if "cubby" in med:
        print()
        if "crun" in med:
            print(f"cubby/crun (raw)          : {med['cubby'] / med['crun']:.3f}")
            if "crun-wrap" in med and crun_net > 0:
                print(f"cubby/crun (minus wrapper): {med['cubby'] / crun_net:.3f}")
        if "runc" in med:
            print(f"cubby/runc                : {med['cubby'] / med['runc']:.3f}")
    if with_rss:
        print()
        print("peak RSS: max over the RSS runs of GNU time's %M for the runtime process and the descendants it")
        print(f"reaped (KiB; floor of the method: {rss_floor} KiB for /bin/true). For crun on a hybrid host it")
        print("includes the wrapper's unshare/sh/umount (see crun-wrap).")
    return med, crun_net


import signal, subprocess


results = {}
if LOAD in ("both", "quiet"):
    results["quiet"] = phase("quiet", True)
if LOAD in ("both", "loaded"):
    # One core kept busy for the whole phase by a CPU hog started here
    # (a shell busy loop), as when other work shares the machine.
    hog = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        print(f"   CPU hog running (pid {hog.pid}, one core busy)", flush=True)
        results["loaded"] = phase("loaded (one core busy)", False)
    finally:
        hog.send_signal(signal.SIGKILL)
        hog.wait()

print()
print("== summary (medians; ratio < 1 means cubby is faster)")
for label, (med, crun_net) in results.items():
    parts = [f"{n} {med[n]*1000:.2f} ms" for n in med]
    line = f"{label:<7}: " + ", ".join(parts)
    if "cubby" in med:
        if crun_net:
            line += f"; cubby/crun {med['cubby'] / crun_net:.3f}"
            if "crun-wrap" in med:
                line += " (crun minus wrapper)"
        if "runc" in med:
            line += f"; cubby/runc {med['cubby'] / med['runc']:.3f}"
    print(line)
PY
