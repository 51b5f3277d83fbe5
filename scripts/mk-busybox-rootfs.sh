#!/usr/bin/env bash
# Build a minimal busybox root filesystem in DIR.
#
#   scripts/mk-busybox-rootfs.sh DIR
#
# Uses the statically linked busybox from Debian's busybox-static package
# (override with BUSYBOX=/path/to/static/busybox). Creates DIR/bin/busybox,
# a symlink per applet, /etc/{passwd,group,hostname}, /tmp (1777),
# /proc /sys /dev /root /run /var/tmp. Safe to run again on the same DIR.
set -euo pipefail

die() { echo "mk-busybox-rootfs: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DIR"
dir=$1

bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || die "$bb not found: install it with 'apt-get install -y busybox-static'"
# A dynamically linked busybox (package 'busybox') would not run inside an
# empty rootfs; insist on the static one.
if command -v file >/dev/null 2>&1; then
    if file -L "$bb" | grep -q 'dynamically linked'; then
        die "$bb is dynamically linked: install 'busybox-static' (apt-get install -y busybox-static)"
    fi
elif [ -r "$bb" ] && head -c 4096 "$bb" | grep -aq 'ld-linux'; then
    die "$bb looks dynamically linked: install 'busybox-static' (apt-get install -y busybox-static)"
fi

mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev root run var/tmp tmp
chmod 0755 bin sbin usr usr/bin usr/sbin etc proc sys dev run var
chmod 0700 root
chmod 1777 tmp var/tmp

# Copy (not hard link: the rootfs may live on another filesystem).
if ! cmp -s "$bb" bin/busybox 2>/dev/null; then
    rm -f bin/busybox
    cp "$bb" bin/busybox
fi
chmod 0755 bin/busybox

# One symlink per applet, at the path busybox itself reports (--list-full
# gives e.g. "bin/sh", "usr/bin/env"); fall back to bin/ for --list.
if applets=$("$bb" --list-full 2>/dev/null) && [ -n "$applets" ]; then
    :
else
    applets=$("$bb" --list | sed 's|^|bin/|')
fi
[ -n "$applets" ] || die "$bb --list printed nothing"
while IFS= read -r path; do
    [ -n "$path" ] || continue
    [ "$path" = bin/busybox ] && continue
    case $path in */*) ;; *) continue ;; esac   # e.g. "linuxrc": not wanted
    d=${path%/*}
    # relative link target back to /bin/busybox
    case $d in
        bin) target=busybox ;;
        sbin) target=../bin/busybox ;;
        usr/bin|usr/sbin) target=../../bin/busybox ;;
        *) target=/bin/busybox ;;
    esac
    mkdir -p "$d"
    if [ "$(readlink "$path" 2>/dev/null)" != "$target" ]; then
        rm -f "$path"
        ln -s "$target" "$path"
    fi
done <<<"$applets"
# Make sure the essentials are in /bin whatever --list-full said.
for a in sh true false echo cat ls sleep env id; do
    [ -e "bin/$a" ] || [ -L "bin/$a" ] || ln -s busybox "bin/$a"
done

cat > etc/passwd <<'PW'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > etc/group <<'GR'
root:x:0:
nogroup:x:65534:
GR
echo cubby > etc/hostname
chmod 0644 etc/passwd etc/group etc/hostname
# Placeholders that container engines bind-mount over.
: > etc/hosts
: > etc/resolv.conf
