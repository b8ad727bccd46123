#!/usr/bin/env bash
# Make sure a Docker engine answers and debootstrap (for the offline base image) is present,
# and, when this script manages the engine, that gVisor's runsc is installed and registered.
#
# Idempotent. Exit 0 when `docker info` answers (installing debootstrap if missing and
# we are root on Debian). Otherwise, as root on Debian/Ubuntu: apt-get install docker.io,
# debootstrap and runsc when missing, register runsc in /etc/docker/daemon.json, start
# dockerd in the background and wait for it (up to ENSURE_DOCKER_WAIT seconds, default 60).
# Anywhere else: one line on how to get an engine, exit 1.
#
# runsc (gVisor, --sandbox-runtime runsc) is registered as
#   "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
# (ptrace platform; without --network=none every start fails in the root network namespace).
# Only into a daemon this script started (its pid is in $MARKER), then `kill -HUP` (runtimes
# reload without a restart); a daemon someone else runs is left alone unless
# ENSURE_DOCKER_RUNSC=1 says to register it there too (`scicode-harness doctor` prints the
# snippet). A failed runsc install is reported and is not fatal: runc still works.
#
# The Python SDK talks to the engine; the docker CLI is only used here to probe it
# (falling back to curl on the socket when the CLI is absent).
set -u

WAIT="${ENSURE_DOCKER_WAIT:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
APT_UPDATED=0
MARKER="${ENSURE_DOCKER_MARKER:-/run/scicode-harness/dockerd.pid}"
DAEMON_JSON="${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
RUNSC_PATH=/usr/bin/runsc

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

runsc_registered() {
    command -v docker >/dev/null 2>&1 &&
        timeout 20 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

# Merge the runsc entry into daemon.json (other keys kept). Exit 0 if the file changed.
register_runsc_json() {
    mkdir -p "$(dirname "$DAEMON_JSON")"
    python3 - "$DAEMON_JSON" "$RUNSC_PATH" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as fh:
        cfg = json.load(fh) if os.path.getsize(path) else {}
except FileNotFoundError:
    cfg = {}
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
if cfg.get("runtimes", {}).get("runsc") == want:
    sys.exit(1)
cfg.setdefault("runtimes", {})["runsc"] = want
tmp = path + ".tmp"
with open(tmp, "w") as fh:
    json.dump(cfg, fh, indent=2)
    fh.write("\n")
os.replace(tmp, path)
PY
}

install_runsc() {
    [ -x "$RUNSC_PATH" ] && return 0
    apt_install runsc && [ -x "$RUNSC_PATH" ] && return 0
    log "could not install runsc (gVisor); --sandbox-runtime runsc will be unavailable, runc still works"
    return 1
}

we_started_daemon() {
    local pid
    pid="$(cat "$MARKER" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

# A running daemon: register runsc if we manage it (or are told to), reload with SIGHUP.
ensure_runsc_running() {
    runsc_registered && return 0
    if ! is_root || ! is_debian || { ! we_started_daemon && [ "${ENSURE_DOCKER_RUNSC:-0}" != 1 ]; }; then
        log "runsc (gVisor) is not registered with this Docker daemon; \`scicode-harness doctor\` shows how (only needed for --sandbox-runtime runsc)"
        return 0
    fi
    install_runsc || return 0
    register_runsc_json || true
    local pid
    pid="$(cat "$MARKER" 2>/dev/null)"
    we_started_daemon || pid="$(pgrep -xo dockerd)"
    [ -n "$pid" ] || { log "no local dockerd to reload; runsc not registered"; return 0; }
    log "registered runsc in $DAEMON_JSON; reloading dockerd ($pid) with SIGHUP"
    kill -HUP "$pid"
    for _ in $(seq 1 20); do
        runsc_registered && return 0
        sleep 0.5
    done
    log "dockerd did not pick up runsc after SIGHUP; see $DAEMON_JSON"
    return 0
}

if engine_answers; then
    ensure_debootstrap
    ensure_runsc_running
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
started=0
if ! pgrep -x dockerd >/dev/null 2>&1 && install_runsc; then
    register_runsc_json && log "registered runsc in $DAEMON_JSON"
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    mkdir -p "$(dirname "$LOG")" 2>/dev/null || LOG=/tmp/dockerd.log
    touch "$LOG" 2>/dev/null || LOG=/tmp/dockerd.log
    log "starting dockerd (log: $LOG)"
    # setsid: keep the daemon alive after this script (and its session) ends
    setsid dockerd >>"$LOG" 2>&1 < /dev/null &
    started=1
fi

for _ in $(seq 1 "$WAIT"); do
    if engine_answers; then
        log "Docker engine is up"
        if [ "$started" = 1 ]; then   # remember the daemon is ours (runsc may be registered there later)
            mkdir -p "$(dirname "$MARKER")" && pgrep -xo dockerd > "$MARKER"
        fi
        ensure_runsc_running
        exit 0
    fi
    sleep 1
done
echo "ensure-docker: dockerd did not answer within ${WAIT}s; see $LOG" >&2
exit 1
