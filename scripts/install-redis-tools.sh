#!/usr/bin/env bash
# Ensure redis-server, redis-cli and redis-benchmark exist (Debian packages
# redis-server and redis-tools). Tests use them as a reference implementation
# and as load generators; tests that need them skip when they are missing, so
# without root we only warn.
#
# Installing must not leave a system redis on port 6379 running: tests never
# depend on it, and a stray one would only hide port mistakes.
set -euo pipefail

log() { echo "install-redis-tools: $*"; }

have_all() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null &&
        command -v redis-benchmark >/dev/null
}

if have_all; then
    log "already installed: $(redis-server --version | cut -d' ' -f1-3)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "WARNING: redis-server/redis-cli/redis-benchmark missing and cannot apt-get install them"
    log "WARNING: (need root on Debian); tests that need them will be skipped"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d answering 101 is Debian's documented way to forbid maintainer
# scripts from starting services; only ours if none exists, removed afterwards.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod +x "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi

# Refresh package lists only when apt does not know the package yet (fresh
# container) or when the install fails on stale lists.
if ! apt-cache show redis-server >/dev/null 2>&1; then
    log "apt-get update (no package lists yet)"
    apt-get update -qq
fi
install() { apt-get install -y -qq --no-install-recommends redis-server redis-tools; }
if ! install; then
    log "install failed, retrying after apt-get update"
    apt-get update -qq
    install
fi

# Belt and braces: if a service got started anyway (existing policy-rc.d
# allowing it, systemd), stop it and keep it from starting at boot.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if pgrep -x redis-server >/dev/null; then
    service redis-server stop >/dev/null 2>&1 || true
fi
have_all || { log "ERROR: redis tools still missing after install"; exit 1; }
log "installed: $(redis-server --version | cut -d' ' -f1-3)"
