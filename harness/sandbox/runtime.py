"""OCI runtimes for the Docker backend: runc (default) and gVisor's runsc.

runsc puts a user-space kernel (gVisor's Sentry) between the model's code and the
host kernel: the program's system calls are served by gVisor, not Linux, so a host
kernel bug is no longer one step away. It costs start-up time and system-call speed
(ptrace platform; see bench/RESULTS.md and the README).

The daemon must know the runtime. Docker 20.10+ reloads `runtimes` from daemon.json on
SIGHUP; :data:`DAEMON_JSON_SNIPPET` is the entry `make setup` writes (when it manages
the engine) and `scicode-harness doctor` prints (when it does not).

Starts are bounded (:func:`start`): a runsc start can hang with the container stuck in
"Created" and a `runsc-sandbox` spinning; past the deadline the container is removed
and :func:`reap` kills the runtime processes `docker rm` leaves behind (local daemon
only: it looks for the container id in the host's process table).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
from typing import Literal, Optional, get_args

from harness.sandbox import SandboxUnavailable

log = logging.getLogger(__name__)

Runtime = Literal["runc", "runsc"]
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
DEFAULT = "runc"
RUNSC_PATH = "/usr/bin/runsc"
RUNSC_ENTRY = {"path": RUNSC_PATH, "runtimeArgs": ["--network=none"]}
DAEMON_JSON_SNIPPET = json.dumps({"runtimes": {"runsc": RUNSC_ENTRY}})
START_TIMEOUT = 60.0      # seconds for the daemon to start a container (runc or runsc)

INSTALL_HINT = ("runsc (gVisor) is not registered with the Docker daemon: as root on Debian/Ubuntu "
                "`apt-get install -y runsc`, merge " + DAEMON_JSON_SNIPPET
                + " into /etc/docker/daemon.json, then `kill -HUP $(pidof dockerd)`")

# Names of the processes a runsc container consists of, besides containerd's shim.
_RUNTIME_PROCS = ("runsc", "runsc-sandbox", "runsc-gofer", "containerd-shim-runc-v2",
                  "containerd-shim")
_HEX64 = re.compile(rb"\b([0-9a-f]{64})\b")


class StartTimeout(RuntimeError):
    """The daemon did not start the container within the deadline."""


def host_pids(pids: int) -> int:
    """Host pids-cgroup limit for a runsc container whose program may have `pids` tasks:
    room for the Sentry's Go threads and one ptrace stub per task (ptrace platform)."""
    return 4 * int(pids) + 256


def start_timeout() -> float:
    try:
        return max(float(os.environ.get("SCICODE_SANDBOX_START_TIMEOUT", START_TIMEOUT)), 0.001)
    except ValueError:
        return START_TIMEOUT


def registered(client) -> tuple[Optional[dict], str]:
    """(runtimes the daemon knows or None when it does not say, its default runtime)."""
    info = client.info()
    rts = info.get("Runtimes")
    return (dict(rts) if isinstance(rts, dict) else None), (info.get("DefaultRuntime") or DEFAULT)


def resolve(client, name: Optional[str]) -> tuple[str, Optional[str]]:
    """(runtime name recorded, value for HostConfig.Runtime): None when it is the daemon's
    default, so a daemon (e.g. Podman) that only has its default is asked for nothing."""
    name = (name or DEFAULT).lower()
    if name not in RUNTIMES:
        raise SandboxUnavailable(f"unknown sandbox runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    try:
        rts, default = registered(client)
    except Exception as exc:
        raise SandboxUnavailable(f"cannot ask the Docker daemon for its runtimes: {exc}") from None
    if name == default:
        return name, None
    if rts is not None and name not in rts:
        if name == "runsc":
            raise SandboxUnavailable(INSTALL_HINT + " (or use --sandbox-runtime runc)")
        raise SandboxUnavailable(f"the Docker daemon has no runtime {name!r} (it has: {', '.join(rts)})")
    return name, name


def start(api, cid: str, timeout: float) -> None:
    """POST /containers/{id}/start with its own deadline (not the client's 120 s)."""
    import requests
    try:
        res = api._post(api._url("/containers/{0}/start", cid), timeout=timeout)
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
        if "timed out" in str(exc).lower() or isinstance(exc, requests.exceptions.Timeout):
            raise StartTimeout(f"the container did not start within {timeout:g}s") from None
        raise
    api._raise_for_status(res)


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def runtime_processes(cids: Optional[set[str]] = None) -> list[tuple[int, str, str]]:
    """(pid, container id, process name) of runsc / shim processes of Docker's containers (the
    containerd namespace `moby`; never Kubernetes' or others') on this host, for the given
    container ids (all when None). Empty when /proc is not ours to read."""
    out = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        cmd = _cmdline(pid)
        if not cmd:
            continue
        argv0 = os.path.basename(cmd.split(b"\0", 1)[0]).decode(errors="replace")
        if argv0 not in _RUNTIME_PROCS:
            continue
        flat = cmd.replace(b"\0", b" ")
        if b"/moby/" not in flat and b"-namespace moby" not in flat:
            continue
        m = _HEX64.search(flat)
        if m is None:
            continue
        cid = m.group(1).decode()
        if cids is None or cid in cids:
            out.append((int(pid), cid, argv0))
    return out


def _kill(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


def reap(cid: str) -> int:
    """Kill what the runtime left running for container `cid` (after `docker rm -f`)."""
    procs = runtime_processes({cid})
    n = _kill([p for p, _, name in procs if name != "containerd-shim-runc-v2"])
    n += _kill([p for p, _, name in procs if name == "containerd-shim-runc-v2"])
    if n:
        log.warning("killed %d runtime process(es) left by container %s", n, cid[:12])
    return n


def reap_orphans(client) -> list[tuple[int, str, str]]:
    """Kill runsc processes (and their shims) whose container the daemon no longer knows.
    Only for a daemon on this host (a unix socket): a remote daemon's ids say nothing here."""
    base = str(getattr(getattr(client, "api", None), "base_url", "http+docker://localhost"))
    if not base.startswith("http+docker://"):
        return []
    procs = [p for p in runtime_processes() if p[2].startswith("runsc")]
    if not procs:
        return []
    try:
        known = {c["Id"] for c in client.api.containers(all=True)}
    except Exception as exc:
        log.warning("cannot list containers to find runsc leftovers: %s", exc)
        return []
    gone = {cid for _, cid, _ in procs if cid not in known}
    if not gone:
        return []
    # re-read after listing: a container created meanwhile is in `known` or not yet running
    left = [p for p in runtime_processes(gone)]
    for cid in gone:
        reap(cid)
    return left

