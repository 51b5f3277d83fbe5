#!/usr/bin/env bash
# Create an OCI bundle with a busybox rootfs.
#
#   scripts/mk-bundle.sh BUNDLE [CMD...]      (CMD defaults to /bin/true)
#
# BUNDLE/rootfs comes from mk-busybox-rootfs.sh; BUNDLE/config.json from
# "$SPEC_RUNTIME spec" (default: runc; set SPEC_RUNTIME=path/to/cubby-oci
# once `cubby-oci spec` exists), then patched: process.terminal=false,
# process.args=CMD, root.readonly=false, and the nofile rlimit clamped to
# the current hard limit (unprivileged sandboxes cannot raise it).
set -euo pipefail

die() { echo "mk-bundle: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 BUNDLE [CMD...]"
bundle=$1; shift
[ $# -gt 0 ] || set -- /bin/true

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec_rt=${SPEC_RUNTIME:-runc}
command -v "$spec_rt" >/dev/null 2>&1 || die "$spec_rt not found (apt-get install -y runc, or set SPEC_RUNTIME)"
command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install -y python3)"

mkdir -p "$bundle"
"$here/mk-busybox-rootfs.sh" "$bundle/rootfs"

rm -f "$bundle/config.json"
(cd "$bundle" && "$spec_rt" spec) || die "'$spec_rt spec' failed"
[ -s "$bundle/config.json" ] || die "'$spec_rt spec' wrote no config.json"

hard_nofile=$(ulimit -Hn)
python3 - "$bundle/config.json" "$hard_nofile" "$@" <<'PY'
import json, sys
path, hard, args = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(path) as f:
    cfg = json.load(f)
proc = cfg.setdefault("process", {})
proc["terminal"] = False
proc["args"] = args
cfg.setdefault("root", {})["path"] = cfg.get("root", {}).get("path", "rootfs")
cfg["root"]["readonly"] = False
if hard != "unlimited":
    h = int(hard)
    for rl in proc.get("rlimits", []):
        if rl.get("type") == "RLIMIT_NOFILE":
            rl["hard"] = min(rl.get("hard", h), h)
            rl["soft"] = min(rl.get("soft", h), rl["hard"])
with open(path, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
PY
