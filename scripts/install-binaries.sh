#!/usr/bin/env bash
# Provide etcd, etcdctl and consul in the project-local, git-ignored .tools/bin/.
#
# Tests start real etcd and Consul processes; this script makes sure the
# binaries exist without touching the system: a binary already on PATH is
# symlinked, anything else comes from Debian's packages, fetched with a private
# apt configuration (own sources list, lists, cache) and unpacked with dpkg-deb.
# Idempotent: when .tools/bin already has working binaries it does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

# Debian is the one source we can reach from CI (PyPI and Debian mirrors only).
# etcd 3.5 lives in trixie (bullseye's 3.3 is too old); consul was dropped
# after bullseye, whose 1.8.7 is the last Debian build.
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ETCD_SERIES="3.5."
CONSUL_SERIES="1.8."

log() { echo "install-binaries: $*"; }

# A tool counts as installed when .tools/bin/<name> exists and actually runs.
runs() {
    case "$1" in
        etcd) "$BIN/etcd" --version >/dev/null 2>&1 ;;
        etcdctl) "$BIN/etcdctl" version >/dev/null 2>&1 ;;
        consul) "$BIN/consul" version >/dev/null 2>&1 ;;
    esac
}

report() {
    log "etcd:    $("$BIN/etcd" --version | head -n1)"
    log "etcdctl: $("$BIN/etcdctl" version | head -n1)"
    log "consul:  $("$BIN/consul" version | head -n1)"
}

missing=()
for tool in etcd etcdctl consul; do
    runs "$tool" || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "already installed in .tools/bin, nothing to do"
    report
    exit 0
fi

# 1. Reuse binaries already on PATH. .tools/bin is left out of the search (the
#    Makefile puts it first on PATH) so we never link a tool to itself.
SYS_PATH="$(tr ':' '\n' <<<"$PATH" | grep -vxF "$BIN" | paste -sd: -)"
still_missing=()
for tool in "${missing[@]}"; do
    found="$(PATH="$SYS_PATH" command -v "$tool" || true)"
    if [ -n "$found" ] && [[ "$(readlink -f "$found")" != "$TOOLS"/* ]]; then
        ln -sfn "$found" "$BIN/$tool"
        if runs "$tool"; then
            log "linked $tool -> $found"
            continue
        fi
        rm -f "$BIN/$tool"
        log "$found does not run, ignoring it"
    fi
    still_missing+=("$tool")
done

# 2. Fetch the rest from Debian with a private apt setup: the system's sources,
#    pins, package lists and dpkg status stay untouched.
if [ ${#still_missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
        log "ERROR: need apt-get and dpkg-deb to fetch ${still_missing[*]}; install them yourself and put them on PATH"
        exit 1
    }
    APT="$TOOLS/apt"
    rm -rf "$APT"
    mkdir -p "$APT"/{lists/partial,cache/archives/partial,etc/parts,debs}
    trap 'rm -rf "$APT"' EXIT
    KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
    cat >"$APT/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR trixie main
deb [signed-by=$KEYRING] $MIRROR bullseye main
EOF
    opts=(
        -o "Dir::Etc::sourcelist=$APT/etc/sources.list" -o "Dir::Etc::sourceparts=$APT/etc/parts"
        -o "Dir::Etc::preferences=/dev/null" -o "Dir::Etc::preferencesparts=$APT/etc/parts"
        -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache"
        -o "Dir::State::status=/dev/null" -o "APT::Get::List-Cleanup=0"
    )
    # As root apt drops privileges to _apt, which cannot write into our tree.
    [ "$(id -u)" -eq 0 ] && opts+=(-o "APT::Sandbox::User=root")

    log "fetching Debian package lists (trixie, bullseye) into a private apt dir"
    apt-get "${opts[@]}" -qq update

    # Newest version of a package within a series, e.g. "3.5." -> 3.5.16-4.
    pick() {
        apt-cache "${opts[@]}" madison "$1" | awk -v s="$2" '$3 ~ "^"s { print $3; exit }'
    }
    pkgs=()
    for tool in "${still_missing[@]}"; do
        case "$tool" in
            etcd) pkg=etcd-server series=$ETCD_SERIES ;;
            etcdctl) pkg=etcd-client series=$ETCD_SERIES ;;
            consul) pkg=consul series=$CONSUL_SERIES ;;
        esac
        version="$(pick "$pkg" "$series")"
        [ -n "$version" ] || { log "ERROR: no $pkg $series* in Debian"; exit 1; }
        pkgs+=("$pkg=$version")
    done
    log "downloading ${pkgs[*]}"
    (cd "$APT/debs" && apt-get "${opts[@]}" -qq download "${pkgs[@]}")

    for deb in "$APT"/debs/*.deb; do
        dpkg-deb -x "$deb" "$TOOLS/debian"
        log "unpacked $(basename "$deb") into .tools/debian"
    done
    for tool in "${still_missing[@]}"; do
        # Relative link: the checkout can be moved without breaking it.
        ln -sfn "../debian/usr/bin/$tool" "$BIN/$tool"
        runs "$tool" || { log "ERROR: .tools/bin/$tool does not run"; exit 1; }
        log "installed $tool from Debian"
    done
fi

report
