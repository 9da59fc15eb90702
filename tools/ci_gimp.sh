#!/usr/bin/env bash
# GIMP 3 for the end-to-end test of the GIMP plug-in, on a Debian 12 host (whose GIMP is 2.10).
#
# Debian 13 (trixie) ships GIMP 3 but needs a newer libc, so GIMP runs in a trixie root made with debootstrap.
# Building it costs ~1-2 min (dpkg unpacking dominates), so the finished root is kept as a .tar.zst in the
# cache folder and restored in seconds on later runs; the downloaded .debs are cached too.
#
# Usage (as root):
#   tools/ci_gimp.sh [setup]                    make $HAIRCLIP_GIMP_ROOT ready: keep, restore from cache, or build
#   tools/ci_gimp.sh run [--bind HOST:GUEST]... -- CMD [ARG...]
#                                               run CMD in the root (as root, empty environment but for
#                                               HOME=/root PATH LANG), in a private mount namespace: the
#                                               mounts vanish with the command, whatever happens to it
#   tools/ci_gimp.sh clean                      delete the root (the cache stays)
# Environment: HAIRCLIP_GIMP_ROOT (default /opt/hairclip-gimp3), HAIRCLIP_CI_CACHE (default
# /var/cache/hairclip-ci), HAIRCLIP_DEBIAN_MIRROR (default: the host's configured Debian mirror).
set -euo pipefail

ROOT=${HAIRCLIP_GIMP_ROOT:-/opt/hairclip-gimp3}
CACHE=${HAIRCLIP_CI_CACHE:-/var/cache/hairclip-ci}
SUITE=trixie
PKGS="gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-msgpack xdotool"
# The key names the cached root: change the suite, the packages or the recipe version and it is rebuilt.
KEY=$(printf '%s\n' "recipe 2" "$SUITE" "$PKGS" | sha256sum | cut -c1-12)
TARBALL=$CACHE/gimp3-$SUITE-$KEY.tar.zst
STAMP=.hairclip-ci-gimp3

log() { printf '[ci_gimp] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

mirror() {
    if [ -n "${HAIRCLIP_DEBIAN_MIRROR:-}" ]; then echo "$HAIRCLIP_DEBIAN_MIRROR"; return; fi
    local m
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# Refuse to delete a root that has anything mounted inside it (a bind-mounted /dev would be emptied).
safe_rm() {
    local dir=$1
    [ -e "$dir" ] || return 0
    if awk -v d="$(realpath "$dir")/" '{ if (index($2 "/", d) == 1) found=1 } END { exit !found }' /proc/mounts
    then die "$dir has mounts inside it; unmount them before deleting it"; fi
    rm -rf --one-file-system "$dir"
}

ready() { [ -x "$ROOT/usr/bin/gimp-console-3.0" ] && [ "$(cat "$ROOT/$STAMP" 2>/dev/null)" = "$KEY" ]; }

# Mount the kernel file systems of a root, inside the caller's (private) mount namespace.
mount_root() {
    local r=$1
    mount -t proc proc "$r/proc"
    mount -t sysfs sys "$r/sys"
    mount --bind /dev "$r/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
    mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
    mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
}

build() {
    local tmp=$ROOT.build m
    m=$(mirror)
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends debootstrap >/dev/null; }
    }
    command -v zstd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends zstd >/dev/null
    safe_rm "$tmp"
    mkdir -p "$tmp" "$CACHE/debootstrap" "$CACHE/apt/partial"
    log "debootstrap $SUITE from $m into $tmp"
    # Docs, man pages and translations are a third of the files dpkg unpacks, and no test reads them.
    mkdir -p "$tmp/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
        'path-exclude=/usr/share/gimp/3.0/help/*' > "$tmp/etc/dpkg/dpkg.cfg.d/01-hairclip-ci-nodoc"
    debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap" "$SUITE" "$tmp" "$m" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    echo "deb $m $SUITE main" > "$tmp/etc/apt/sources.list"
    log "installing $PKGS"
    # One private mount namespace for the whole install: nothing stays mounted if it fails half-way.
    unshare -m --propagation private bash -euo pipefail -c '
        r=$1 cache=$2 pkgs=$3
        '"$(declare -f mount_root)"'
        mount_root "$r"
        mount --bind "$cache/apt" "$r/var/cache/apt/archives"
        chroot "$r" apt-get update -q
        chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs
    ' _ "$tmp" "$CACHE" "$PKGS" >"$CACHE/apt.log" 2>&1 ||
        { tail -20 "$CACHE/apt.log" >&2; die "apt-get in the $SUITE root failed (log: $CACHE/apt.log)"; }
    rm -rf "$tmp"/var/lib/apt/lists/*
    echo "$KEY" > "$tmp/$STAMP"
    safe_rm "$ROOT"
    mv "$tmp" "$ROOT"
    log "packing $TARBALL"
    tar -C "$ROOT" --one-file-system -cf - . | zstd -q -3 -T0 -o "$TARBALL.part" && mv "$TARBALL.part" "$TARBALL"
    # Only the current root's tarball is worth keeping.
    find "$CACHE" -maxdepth 1 -name "gimp3-*.tar.zst" ! -name "$(basename "$TARBALL")" -delete
}

restore() {
    log "restoring $ROOT from $TARBALL"
    safe_rm "$ROOT"
    mkdir -p "$ROOT"
    zstd -q -dc "$TARBALL" | tar -C "$ROOT" -xf - || { safe_rm "$ROOT"; return 1; }
    ready
}

setup() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts)"
    if ready; then log "$ROOT is ready"; return 0; fi
    if [ -f "$TARBALL" ] && restore; then log "$ROOT is ready (restored)"; return 0; fi
    build
    ready || die "the root was built but gimp-console-3.0 is missing"
    log "$ROOT is ready (built)"
}

run() {
    [ "$(id -u)" = 0 ] || die "needs root (chroot and mounts)"
    ready || die "$ROOT is not set up; run: tools/ci_gimp.sh setup"
    local binds=()
    while [ $# -gt 0 ]; do
        case $1 in
            --bind) binds+=("$2"); shift 2 ;;
            --) shift; break ;;
            *) die "run: unknown option $1 (expected --bind HOST:GUEST or --)" ;;
        esac
    done
    [ $# -gt 0 ] || die "run: no command given"
    exec unshare -m --propagation private bash -euo pipefail -c '
        r=$1 nb=$2; shift 2
        '"$(declare -f mount_root)"'
        mount_root "$r"
        for ((i = 0; i < nb; i++)); do
            host=${1%%:*} guest=${1#*:}; shift
            mkdir -p "$r$guest"; mount --bind "$host" "$r$guest"
        done
        exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
    ' _ "$ROOT" "${#binds[@]}" "${binds[@]}" "$@"
}

case ${1:-setup} in
    setup) setup ;;
    run) shift; run "$@" ;;
    clean) safe_rm "$ROOT"; safe_rm "$ROOT.build" ;;
    *) die "usage: $0 [setup | run [--bind HOST:GUEST]... -- CMD... | clean]" ;;
esac
