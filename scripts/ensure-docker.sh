#!/usr/bin/env bash
# Make sure a Docker engine answers and debootstrap (for the offline base image) is present.
#
# Idempotent. Exit 0 when `docker info` answers (installing debootstrap if missing and
# we are root on Debian). Otherwise, as root on Debian/Ubuntu: apt-get install docker.io
# and debootstrap when missing, start dockerd in the background and wait for it (up to
# ENSURE_DOCKER_WAIT seconds, default 60). Anywhere else: one line on how to get an
# engine, exit 1.
#
# The Python SDK talks to the engine; the docker CLI is only used here to probe it
# (falling back to curl on the socket when the CLI is absent).
set -u

WAIT="${ENSURE_DOCKER_WAIT:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
APT_UPDATED=0

log() { echo "ensure-docker: $*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

have_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ]
}

engine_answers() {
    if command -v docker >/dev/null 2>&1; then
        timeout 20 docker info >/dev/null 2>&1 && return 0
    fi
    # No CLI (or CLI broken): ping the default socket directly.
    local sock="${DOCKER_HOST:-unix:///var/run/docker.sock}"
    case "$sock" in
        unix://*)
            sock="${sock#unix://}"
            [ -S "$sock" ] && command -v curl >/dev/null 2>&1 &&
                [ "$(curl -s --max-time 5 --unix-socket "$sock" http://localhost/_ping 2>/dev/null)" = OK ]
            return
            ;;
    esac
    return 1
}

apt_install() {
    # apt-get update only once, and only when something must be installed.
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || { log "apt-get update failed"; return 1; }
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_debootstrap() {
    have_debootstrap && return 0
    if is_root && is_debian; then
        apt_install debootstrap || log "could not install debootstrap (needed only for the offline image build)"
    else
        log "debootstrap is missing; install it (e.g. sudo apt-get install debootstrap) to build the offline image"
    fi
    return 0
}

if engine_answers; then
    ensure_debootstrap
    exit 0
fi

if ! is_root || ! is_debian; then
    echo "ensure-docker: no Docker engine answers; install and start one (https://docs.docker.com/engine/install/, or as root on Debian: apt-get install docker.io && dockerd &), or set DOCKER_HOST" >&2
    exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
have_debootstrap || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}" || { echo "ensure-docker: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    mkdir -p "$(dirname "$LOG")" 2>/dev/null || LOG=/tmp/dockerd.log
    touch "$LOG" 2>/dev/null || LOG=/tmp/dockerd.log
    log "starting dockerd (log: $LOG)"
    # setsid: keep the daemon alive after this script (and its session) ends
    setsid dockerd >>"$LOG" 2>&1 < /dev/null &
fi

for _ in $(seq 1 "$WAIT"); do
    if engine_answers; then
        log "Docker engine is up"
        exit 0
    fi
    sleep 1
done
echo "ensure-docker: dockerd did not answer within ${WAIT}s; see $LOG" >&2
exit 1
