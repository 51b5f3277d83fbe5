#!/usr/bin/env bash
# Image benchmark: `cubby pull` vs skopeo copy + umoci unpack, from a local
# registry on 127.0.0.1.
#
#   bench/images.sh                 # ITER=5
#   ITER=10 bench/images.sh
#   SKIP_CUBBY=1 bench/images.sh    # only the skopeo+umoci half
#
# Starts a registry (scripts/registry.sh) in a temp dir, pushes test/big
# (scripts/mk-test-images.sh --only big: ~138 MB uncompressed in 5 layers,
# random data, 3 x 6 MiB + 1600 small files per big layer) unless the
# registry has it, then measures, interleaved, ITER samples of:
#   (a) cubby pull, cold store: `cubby --root NEWDIR pull REF` (pull + unpack)
#   (b) skopeo copy --src-tls-verify=false docker://REF oci:NEWDIR:latest,
#       then umoci unpack --image NEWDIR:latest NEWBUNDLE (each timed, and
#       their sum)
#   (c) cubby pull of the image already in the store (same --root as (a),
#       right after it)
#   (d) with the image in a warm store: `cubby --root R run --rm REF true`
#       vs `cubby --root R run --rm --rootfs DIR true` (DIR: the rootfs umoci
#       unpacked); the difference of medians estimates preparing the
#       container rootfs (overlay) from the cached image.
# Each cubby part is first tried once; if it fails (the image CLI is being
# written) its error is printed and that part is left out. Prints medians
# and skopeo+umoci / cubby. Everything (temp dirs, registry) is removed on
# exit.
#
# Env: ITER (5), CUBBY (target/release/cubby; built with cargo if missing),
#      SKIP_CUBBY=1, REGISTRY_DIR (keep the registry's data there between
#      runs instead of a temp dir; the registry is still stopped at exit),
#      KEEP=1 keeps the temp dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ITER=${ITER:-5}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (umoci unpack and cubby run need it)"
for t in skopeo umoci python3 docker-registry curl; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install -y skopeo umoci python3 docker-registry curl)"
done
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "ITER must be a positive number"

work=$(mktemp -d "${TMPDIR:-/tmp}/cubby-imgbench.XXXXXX")
regdir=${REGISTRY_DIR:-$work/registry}
cleanup() {
    local rc=$?
    set +e
    "$repo/scripts/registry.sh" stop "$regdir"
    # Containers a failed `cubby run` may have left.
    if [ -d "$work/state" ] && [ -n "${cubby:-}" ]; then
        CUBBY_STATE_DIR=$work/state "$cubby" rm -f $(CUBBY_STATE_DIR=$work/state "$cubby" ps -aq 2>/dev/null) \
            >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "bench: kept $work" >&2
    else
        # Overlay mounts a failed cubby run may have left under $work.
        grep -F " $work/" /proc/self/mounts | awk '{print $2}' | sort -r \
            | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cubby=
if [ "${SKIP_CUBBY:-0}" != 1 ]; then
    cubby=${CUBBY:-$repo/target/release/cubby}
    if [ ! -x "$cubby" ] && [ -z "${CUBBY:-}" ]; then
        echo "== building cubby (cargo build --release -p cubby)"
        (cd "$repo" && cargo build --release -p cubby) || { echo "!! cargo build failed: no cubby parts"; cubby=; }
    fi
    if [ -n "$cubby" ] && [ ! -x "$cubby" ]; then
        echo "!! cubby not found at $cubby: no cubby parts"
        cubby=
    fi
fi

echo "== registry"
host=$("$repo/scripts/registry.sh" start "$regdir")
ref=$host/test/big:latest
echo "   $host (data: $regdir/data)"
echo "== test/big"
"$repo/scripts/mk-test-images.sh" --only big "$host" | sed 's/^/   /'

echo "== host: $(uname -r), $(nproc) cpus, $(skopeo --version), $(umoci --version)"
[ -n "$cubby" ] && echo "   cubby: $cubby"

python3 - "$work" "$ITER" "$ref" "$cubby" <<'PY'
import os, shutil, statistics, subprocess, sys, time

work, iters, ref, cubby = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
env = dict(os.environ, CUBBY_STATE_DIR=os.path.join(work, "state"))
seq = 0

def fresh(kind):
    global seq
    seq += 1
    return os.path.join(work, f"{kind}-{seq}")

def run(argv, show_errors=False):
    """Run argv; return (ok, seconds, stderr tail)."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    err = p.stderr.decode(errors="replace").strip()
    if p.returncode != 0 and show_errors:
        print(f"!! `{' '.join(argv)}` exited {p.returncode}:", flush=True)
        for line in err.splitlines()[-8:]:
            print(f"     {line}", flush=True)
    return p.returncode == 0, dt, err

def rm(path):
    # a failed cubby may leave mounts under its root
    subprocess.run(["sh", "-c", f"grep -F ' {path}' /proc/self/mounts | cut -d' ' -f2 | sort -r | "
                    "xargs -r -n1 umount -l"], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)

# --- skopeo + umoci ----------------------------------------------------------
def skopeo_umoci(keep_rootfs=None):
    layout, bundle = fresh("oci"), fresh("bundle")
    ok1, t1, _ = run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                      f"docker://{ref}", f"oci:{layout}:latest"], show_errors=True)
    ok2, t2, _ = (run(["umoci", "unpack", "--image", f"{layout}:latest", bundle], show_errors=True)
                  if ok1 else (False, 0, ""))
    good = ok1 and ok2 and os.path.isfile(os.path.join(bundle, "rootfs/big/4/blob2.bin"))
    if good and keep_rootfs:
        os.rename(os.path.join(bundle, "rootfs"), keep_rootfs)
    rm(layout); rm(bundle)
    return (t1, t2) if good else None

# --- cubby ------------------------------------------------------------------------
def cubby_pull(root):
    return run([cubby, "--root", root, "pull", ref])

parts = {}       # name -> list of seconds
def add(name, x):
    parts.setdefault(name, []).append(x)

rootfs_dir = os.path.join(work, "rootfs")
print("== checks", flush=True)
r = skopeo_umoci(keep_rootfs=rootfs_dir)
if r is None:
    print("!! skopeo+umoci failed", file=sys.stderr)
    sys.exit(1)
print(f"   skopeo+umoci ok ({r[0] + r[1]:.2f} s)", flush=True)

do_pull = do_run = False
warm_root = os.path.join(work, "warm-root")
if cubby:
    ok, dt, _ = run([cubby, "--root", warm_root, "pull", ref], show_errors=True)
    do_pull = ok
    print(f"   cubby pull {'ok' if ok else 'FAILED: (a) and (c) left out'}" + (f" ({dt:.2f} s)" if ok else ""), flush=True)
    if ok:
        ok1, _, _ = run([cubby, "--root", warm_root, "run", "--rm", ref, "true"], show_errors=True)
        ok2, _, _ = run([cubby, "--root", warm_root, "run", "--rm", "--rootfs", rootfs_dir, "true"],
                        show_errors=True)
        do_run = ok1 and ok2
        print(f"   cubby run {'ok' if do_run else 'FAILED: (d) left out'}", flush=True)
else:
    print("   no cubby: (a), (c), (d) left out", flush=True)

print(f"== {iters} samples each, interleaved (cold store every time for (a) and (b))", flush=True)
for i in range(iters):
    steps = ["cubby", "skopeo"] if i % 2 == 0 else ["skopeo", "cubby"]
    for step in steps:
        if step == "skopeo":
            r = skopeo_umoci()
            if r is None:
                sys.exit("!! skopeo+umoci failed during the run")
            add("b1", r[0]); add("b2", r[1]); add("b", r[0] + r[1])
        elif do_pull:
            root = fresh("root")
            ok, dt, err = cubby_pull(root)
            if not ok:
                sys.exit(f"!! cubby pull failed during the run: {err[-500:]}")
            add("a", dt)
            ok, dt, err = cubby_pull(root)
            if not ok:
                sys.exit(f"!! warm cubby pull failed during the run: {err[-500:]}")
            add("c", dt)
            rm(root)
    print(f"   {i + 1}/{iters}", flush=True)

# (d) after the pulls, with their writeback flushed first: otherwise every
# fsync of a container start waits behind ~140 MB of dirty pages. ~20 ms a
# sample, so 30 interleaved pairs.
if do_run:
    os.sync()
    for j in range(30):
        order = [True, False] if j % 2 == 0 else [False, True]
        for image in order:
            argv = [cubby, "--root", warm_root, "run", "--rm"]
            argv += [ref, "true"] if image else ["--rootfs", rootfs_dir, "true"]
            ok, dt, err = run(argv)
            if not ok:
                sys.exit(f"!! cubby run failed during the run: {err[-500:]}")
            add("d-image" if image else "d-rootfs", dt)

med = {k: statistics.median(v) for k, v in parts.items()}
def line(label, key):
    if key not in parts:
        print(f"{label:<48} {'-':>10}")
        return
    v = parts[key]
    print(f"{label:<48} {med[key] * 1000:10.1f} {min(v) * 1000:9.1f} {max(v) * 1000:9.1f} {len(v):>3}")

print()
print(f"{'':<48} {'median ms':>10} {'min':>9} {'max':>9} {'n':>3}")
line("(a) cubby pull, cold store", "a")
line("(b) skopeo copy + umoci unpack, cold", "b")
line("    skopeo copy docker:// -> oci:", "b1")
line("    umoci unpack", "b2")
line("(c) cubby pull, image already present", "c")
line("(d) cubby run --rm IMAGE true", "d-image")
line("    cubby run --rm --rootfs DIR true", "d-rootfs")
print()
if "a" in med:
    print(f"skopeo+umoci / cubby pull (cold): {med['b'] / med['a']:.2f}")
if "d-image" in med:
    print(f"rootfs prepare from cached image ~ {(med['d-image'] - med['d-rootfs']) * 1000:.1f} ms "
          "(difference of the (d) medians)")
PY
