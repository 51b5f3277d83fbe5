#!/usr/bin/env bash
# Build the image-layer test images with umoci and push them with skopeo to
# a local registry (see scripts/registry.sh).
#
#   scripts/mk-test-images.sh [--big] [--only LIST] [--force] HOST:PORT
#
#   --big        also build test/big:latest (benchmark image, ~138 MB uncompressed)
#   --only LIST  comma-separated subset of: busybox,layers,multiarch,zstd,big
#   --force      push test/big even if the registry already has it
#
# Images (all linux; busybox is the static binary of busybox-static, so the
# architecture of the "amd64" content is really the build host's):
#   test/busybox:latest   OCI manifest, 1 layer (busybox rootfs + /home).
#                         Config: Entrypoint unset, Cmd ["sh"], Env PATH=...
#                         and FOO=bar, WorkingDir /home, ExposedPorts 8080/tcp.
#   test/busybox:docker   same layer/config pushed as Docker schema2 (v2s2).
#   test/layers:latest    3 layers: busybox; +/data/{a.txt,b.txt,dir/x},
#                         /data/hard (hard link to b.txt), /data/sym -> b.txt;
#                         then /data/.wh.a.txt and /data/dir/.wh..wh..opq +
#                         /data/dir/y. Result: /data/{b.txt,hard,sym,dir/y}.
#   test/layers:umoci     same first 2 layers; layer 3 as umoci repack makes
#                         it (per-file whiteouts .wh.a.txt and dir/.wh.x, no
#                         opaque marker). Same final tree as :latest.
#   test/multiarch:latest OCI image index: linux/amd64 and linux/arm64, each
#                         the busybox image + a layer with /arch ("amd64\n" or
#                         "arm64\n"); the arm64 config says arm64 (fake).
#   test/zstd:latest      test/busybox:latest's config and layer content, the
#                         layer recompressed by skopeo to zstd
#                         (application/vnd.oci.image.layer.v1.tar+zstd).
#   test/big:latest       (--big) busybox + 4 layers of ~34 MB each under
#                         /big/N/: 3 random 6 MiB files + 1600 small random
#                         files (1-16 KiB). Deterministic content.
#
# Builds are reproducible (fixed mtimes/created times, seeded data), so
# running it again pushes the same digests and skopeo skips blobs the
# registry has. Prints "NAME:TAG sha256:..." per pushed manifest on stdout
# (plus "test/multiarch:latest@linux/ARCH sha256:..." for the index
# children); progress goes to stderr.
#
# Env: REGISTRY_CREDS=USER:PASS for a registry with --htpasswd;
#      KEEP=1 keeps the build directory (printed on stderr).
set -euo pipefail

prog=mk-test-images
die() { echo "$prog: $*" >&2; exit 1; }
log() { echo "$prog: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

only="busybox,layers,multiarch,zstd"
force=0
host=
while [ $# -gt 0 ]; do
    case $1 in
        --big) only="$only,big"; shift ;;
        --only) [ $# -ge 2 ] || die "--only needs a list"; only=$2; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        --force) force=1; shift ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$host" ] || die "usage: $0 [--big] [--only LIST] [--force] HOST:PORT"; host=$1; shift ;;
    esac
done
[ -n "$host" ] || die "usage: $0 [--big] [--only LIST] [--force] HOST:PORT"
case $host in
    127.0.0.1:*|localhost:*) ;;
    *) die "refusing to push to '$host': only 127.0.0.1 registries" ;;
esac
want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for w in ${only//,/ }; do
    case $w in busybox|layers|multiarch|zstd|big) ;; *) die "unknown image set '$w'" ;; esac
done

for t in umoci skopeo python3 jq; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y umoci skopeo python3 jq)"
done

# Fixed timestamps make the builds reproducible.
EPOCH=946684800                      # 2000-01-01T00:00:00Z
CREATED=2000-01-01T00:00:00Z
PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

work=$(mktemp -d /tmp/cubby-mkimg.XXXXXX)
cleanup() {
    local rc=$?
    if [ "${KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

L=$work/layout
skopeo_dest=(--insecure-policy copy -q --dest-tls-verify=false)
skopeo_src=(--src-tls-verify=false)
if [ -n "${REGISTRY_CREDS:-}" ]; then
    skopeo_dest+=(--dest-creds "$REGISTRY_CREDS")
    skopeo_src+=(--src-creds "$REGISTRY_CREDS")
fi
inspect_creds=()
[ -n "${REGISTRY_CREDS:-}" ] && inspect_creds=(--creds "$REGISTRY_CREDS")

# All mtimes under $1 (not following symlinks) to $EPOCH.
fix_times() { find "$1" -exec touch -h -d "@$EPOCH" {} +; }

# umoci flags for a reproducible history entry, in array H.
hist() { H=(--history.created "$CREATED" --history.created_by "$1"); }

# Digest of tag $1 in the layout.
layout_digest() {
    jq -r --arg t "$1" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$L/index.json"
}
blob() { echo "$L/blobs/sha256/${1#sha256:}"; }

# push TAG NAME:TAG [skopeo flags...]
push() {
    local tag=$1 dst=$2
    shift 2
    log "push $dst"
    skopeo "${skopeo_dest[@]}" --digestfile "$work/digest" "$@" \
        "oci:$L:$tag" "docker://$host/$dst" >&2 \
        || die "skopeo copy to $host/$dst failed"
    echo "$dst $(cat "$work/digest")"
}

finish_config() {   # reproducible created time on tag $1; extra umoci config flags follow
    local tag=$1
    shift
    umoci config --image "$L:$tag" --no-history --created "$CREATED" "$@"
}

# Layer tars that are not a diff of an unpacked bundle are written by this
# helper and added with `umoci raw add-layer`, never with `umoci insert`:
# umoci 0.4.7's insert writes tars without the last block's padding and the
# end-of-archive blocks (GNU tar: "Unexpected EOF in archive").
cat >"$work/mktar.py" <<'PY'
import io, random, sys, tarfile
out, kind, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = sys.argv[4:]

def add(t, name, typ=tarfile.REGTYPE, mode=0o644, data=b""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = typ, mode, mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.size = len(data) if typ == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)

def d(t, name):
    add(t, name, tarfile.DIRTYPE, 0o755)

with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    if kind == "layer3":
        # whiteout of a.txt; /data/dir replaced by an opaque dir holding y
        d(t, "data/")
        add(t, "data/.wh.a.txt")
        d(t, "data/dir/")
        add(t, "data/dir/.wh..wh..opq")
        add(t, "data/dir/y", data=b"y\n")
    elif kind == "arch":
        add(t, "arch", data=(args[0] + "\n").encode())
    elif kind == "big":
        # /big/N/: 3 x 6 MiB (throughput) + 1600 files of 1..16 KiB (per-file
        # cost), all seeded pseudo-random bytes, i.e. incompressible.
        n = int(args[0])
        rng = random.Random(1000 + n)
        d(t, "big/")
        d(t, f"big/{n}/")
        for i in range(3):
            add(t, f"big/{n}/blob{i}.bin", data=rng.randbytes(6 << 20))
        d(t, f"big/{n}/small/")
        for i in range(1600):
            if i % 100 == 0:
                d(t, f"big/{n}/small/{i // 100:02d}/")
            add(t, f"big/{n}/small/{i // 100:02d}/f{i:04d}",
                data=rng.randbytes(rng.randint(1024, 16384)))
    else:
        sys.exit("mktar: unknown kind " + kind)
PY
mktar() { python3 "$work/mktar.py" "$1" "$2" "$EPOCH" "${@:3}"; }

start=$(date +%s.%N)
umoci init --layout "$L"

# ---- base: busybox rootfs in one layer -------------------------------------
log "build base rootfs"
"$here/mk-busybox-rootfs.sh" "$work/rootfs" >&2
mkdir -p "$work/rootfs/home"
chmod 0755 "$work/rootfs/home" "$work/rootfs"
fix_times "$work/rootfs"

umoci new --image "$L:base"
umoci unpack --image "$L:base" "$work/b0" >/dev/null
cp -a "$work/rootfs/." "$work/b0/rootfs/"
fix_times "$work/b0/rootfs"
hist "busybox rootfs"
umoci repack --image "$L:base" "${H[@]}" "$work/b0"
hist "config"
umoci config --image "$L:base" --created "$CREATED" "${H[@]}" \
    --config.cmd sh --config.env "$PATHENV"

# busybox: base + config (no new layer)
hist "config"
umoci config --image "$L:base" --tag busybox --created "$CREATED" "${H[@]}" \
    --config.env FOO=bar --config.workingdir /home --config.exposedports 8080/tcp

if want busybox; then
    push busybox test/busybox:latest
    push busybox test/busybox:docker --format v2s2
fi

# ---- layers -----------------------------------------------------------------
if want layers; then
    log "build test/layers"
    umoci tag --image "$L:busybox" layers
    umoci unpack --image "$L:layers" "$work/b1" >/dev/null
    r=$work/b1/rootfs
    mkdir -p "$r/data/dir"
    printf 'a\n' >"$r/data/a.txt"
    printf 'b\n' >"$r/data/b.txt"
    printf 'x\n' >"$r/data/dir/x"
    ln "$r/data/b.txt" "$r/data/hard"
    ln -s b.txt "$r/data/sym"
    chmod 0755 "$r/data" "$r/data/dir"
    chmod 0644 "$r/data/a.txt" "$r/data/b.txt" "$r/data/dir/x"
    fix_times "$r"
    hist "add /data"
    umoci repack --image "$L:layers" "${H[@]}" "$work/b1"
    umoci tag --image "$L:layers" layers-umoci

    # Layer 3, the spec way: whiteout + opaque directory. umoci repack never
    # writes opaque markers (see layers-umoci below) and `umoci insert
    # --opaque` would need a second layer for the whiteout, so this tar is
    # written by hand (data/, data/.wh.a.txt, data/dir/,
    # data/dir/.wh..wh..opq, data/dir/y) and added as a raw layer.
    mktar "$work/layer3.tar" layer3
    hist "whiteout a.txt, opaque /data/dir"
    umoci raw add-layer --image "$L:layers" "${H[@]}" \
        "$work/layer3.tar"
    finish_config layers

    # The same change made with unpack/modify/repack: umoci writes
    # data/.wh.a.txt and data/dir/.wh.x (no opaque marker).
    umoci unpack --image "$L:layers-umoci" "$work/b2" >/dev/null
    r=$work/b2/rootfs
    rm "$r/data/a.txt"
    rm -rf "$r/data/dir"
    mkdir "$r/data/dir"
    printf 'y\n' >"$r/data/dir/y"
    chmod 0755 "$r/data/dir"
    chmod 0644 "$r/data/dir/y"
    fix_times "$r"
    hist "rm a.txt, replace /data/dir"
    umoci repack --image "$L:layers-umoci" "${H[@]}" "$work/b2"
    finish_config layers-umoci

    push layers test/layers:latest
    push layers-umoci test/layers:umoci
fi

# ---- multiarch ----------------------------------------------------------------
if want multiarch; then
    log "build test/multiarch"
    for arch in amd64 arm64; do
        mktar "$work/arch-$arch.tar" arch "$arch"
        umoci tag --image "$L:busybox" "ma-$arch"
        hist "add /arch"
        umoci raw add-layer --image "$L:ma-$arch" "${H[@]}" "$work/arch-$arch.tar"
        finish_config "ma-$arch" --os linux --architecture "$arch"
    done
    # Hand-made image index over the two manifests, tagged "multiarch" in the
    # layout's index.json (umoci has no command for indexes).
    python3 - "$L" "$(layout_digest ma-amd64)" "$(layout_digest ma-arm64)" <<'PY'
import hashlib, json, os, sys
layout, amd, arm = sys.argv[1:]
def desc(d, arch):
    size = os.path.getsize(os.path.join(layout, "blobs/sha256", d.split(":")[1]))
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": size,
            "platform": {"architecture": arch, "os": "linux"}}
index = {"schemaVersion": 2,
         "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [desc(amd, "amd64"), desc(arm, "arm64")]}
raw = json.dumps(index, separators=(",", ":")).encode()
dig = hashlib.sha256(raw).hexdigest()
with open(os.path.join(layout, "blobs/sha256", dig), "wb") as f:
    f.write(raw)
p = os.path.join(layout, "index.json")
with open(p) as f:
    top = json.load(f)
top["manifests"] = [m for m in top["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != "multiarch"]
top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                         "digest": "sha256:" + dig, "size": len(raw),
                         "annotations": {"org.opencontainers.image.ref.name": "multiarch"}})
with open(p + ".tmp", "w") as f:
    json.dump(top, f)
os.rename(p + ".tmp", p)
PY
    push multiarch test/multiarch:latest --all
    echo "test/multiarch:latest@linux/amd64 $(layout_digest ma-amd64)"
    echo "test/multiarch:latest@linux/arm64 $(layout_digest ma-arm64)"
fi

# ---- zstd ---------------------------------------------------------------------
if want zstd; then
    # Pushing straight to the registry with --dest-compress-format zstd does
    # nothing here: skopeo 1.9 first finds the gzip blob already in the
    # registry (pushed for test/busybox) and reuses it. Recompressing into a
    # second OCI layout works; that layout is then pushed as is.
    log "recompress busybox to zstd"
    skopeo --insecure-policy copy -q --dest-compress-format zstd \
        "oci:$L:busybox" "oci:$work/zlayout:zstd" >&2 \
        || die "skopeo could not recompress to zstd"
    L_SAVE=$L L=$work/zlayout
    push zstd test/zstd:latest
    L=$L_SAVE
    got=$(skopeo --insecure-policy inspect --raw --tls-verify=false "${inspect_creds[@]}" \
        "docker://$host/test/zstd:latest" | jq -r '.layers[].mediaType' | sort -u)
    [ "$got" = application/vnd.oci.image.layer.v1.tar+zstd ] \
        || die "test/zstd:latest has layer media type '$got', expected tar+zstd"
fi

# ---- big ----------------------------------------------------------------------
if want big; then
    if [ $force = 0 ] && skopeo --insecure-policy inspect --raw --tls-verify=false \
            "${inspect_creds[@]}" "docker://$host/test/big:latest" >"$work/big.json" 2>/dev/null; then
        log "test/big:latest already in $host (use --force to rebuild)"
        echo "test/big:latest sha256:$(sha256sum <"$work/big.json" | cut -d' ' -f1)"
    else
        log "build test/big (4 x ~34 MB random data)"
        umoci tag --image "$L:busybox" big
        for n in 1 2 3 4; do
            mktar "$work/big-$n.tar" big "$n"
            hist "add /big/$n"
            umoci raw add-layer --image "$L:big" "${H[@]}" "$work/big-$n.tar"
            rm -f "$work/big-$n.tar"
        done
        finish_config big
        push big test/big:latest
    fi
fi

log "done in $(python3 -c "import time; print(f'{time.time() - $start:.1f}')")s"
