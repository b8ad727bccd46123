"""Labels on every sandbox container, and removal of the ones a run leaves behind.

Every container the Docker backend creates carries:

* ``org.scicode-harness.sandbox=1``: ours (the only label a sweep lists by);
* ``org.scicode-harness.run``: the run id; ``org.scicode-harness.job``: job id
  (``warm`` for a pre-started pool container that has not taken a job yet);
* ``org.scicode-harness.host`` / ``.pid`` / ``.pid-start``: the harness process
  that owns it (hostname, pid and the pid's start time, so a recycled pid does not
  look alive).

A container is *orphaned* when its owner ran on this host and that process is
gone. ``sweep`` removes orphans (``--all``: every harness container, for when
you know no run is active, e.g. after a crash on another host using the same
daemon). A sweep also kills runsc processes left running for containers the daemon
no longer knows (a failed or hung gVisor start leaves them). Each backend sweeps orphans when it starts and registers its run with
:func:`register_run`: SIGINT, SIGTERM and interpreter exit then remove the run's
containers even if the pipeline never reaches ``close()``.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

log = logging.getLogger(__name__)

PREFIX = "org.scicode-harness."
L_SANDBOX = PREFIX + "sandbox"
L_RUN = PREFIX + "run"
L_JOB = PREFIX + "job"
L_HOST = PREFIX + "host"
L_PID = PREFIX + "pid"
L_PID_START = PREFIX + "pid-start"
L_PIDNS = PREFIX + "pidns"


def pid_namespace() -> str:
    """This process's PID namespace (a harness in a container with --network host shares
    the host's hostname, so hostname + pid alone would mistake the other side's runs)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> Optional[str]:
    """The start time (clock ticks since boot) of pid, or None if not running / unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # field 22; the command (field 2) may hold spaces and parentheses, so split after the last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def owner_labels() -> dict:
    pid = os.getpid()
    return {L_SANDBOX: "1", L_HOST: socket.gethostname(), L_PID: str(pid),
            L_PID_START: process_start(pid) or "", L_PIDNS: pid_namespace()}


def container_labels(run_id: str, job_id: str) -> dict:
    labels = owner_labels()
    labels.update({L_RUN: run_id, L_JOB: job_id})
    return labels


def owner_alive(labels: dict) -> Optional[bool]:
    """True/False for an owner on this host; None when it ran elsewhere (cannot tell)."""
    if labels.get(L_HOST) != socket.gethostname():
        return None
    if labels.get(L_PIDNS, "") != pid_namespace():  # same hostname, other PID namespace
        return None
    try:
        pid = int(labels.get(L_PID, ""))
    except ValueError:
        return False
    start = process_start(pid)
    if start is None:
        if os.path.isdir("/proc/self"):
            return False
        try:                       # no procfs: fall back to signal 0
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    want = labels.get(L_PID_START)
    return not want or want == start


REMOVE_WAIT = 20.0   # seconds for a batch of removals (they run in parallel)
DAEMON_WAIT = 10.0   # seconds to wait for a daemon that does not answer at the end of a run


def _remove_one(client, cid: str) -> bool:
    try:
        client.api.remove_container(cid, force=True, v=True)
        return True
    except Exception as exc:  # already gone, or removal in progress
        if "No such container" in str(exc) or "is already in progress" in str(exc):
            return True
        log.warning("could not remove sandbox container %s: %s", cid[:12], exc)
        return False


def _remove(client, ids: Iterable[str]) -> list[str]:
    """Remove in parallel (a container holding gigabytes takes seconds to die, and an
    interrupted run waits for the slowest one, not for their sum), bounded in time."""
    ids = list(ids)
    if len(ids) <= 1:
        return [cid for cid in ids if _remove_one(client, cid)]
    done: list[str] = []

    def one(cid):
        if _remove_one(client, cid):
            done.append(cid)
    threads = [threading.Thread(target=one, args=(cid,), name="sandbox-remove", daemon=True)
               for cid in ids]
    for t in threads:
        t.start()
    end = time.monotonic() + REMOVE_WAIT
    for t in threads:
        t.join(max(end - time.monotonic(), 0))
    return list(done)


def list_containers(client, run_id: Optional[str] = None) -> list[dict]:
    filters = [f"{L_SANDBOX}=1"]
    if run_id:
        filters.append(f"{L_RUN}={run_id}")
    return client.api.containers(all=True, filters={"label": filters})


def sweep(client, everything: bool = False, dry_run: bool = False) -> list[dict]:
    """Remove containers of dead runs on this host (all harness containers if everything).

    Returns one dict per container (id, run, job, reason). Never touches a container
    whose owner is alive, unless `everything`.
    """
    out = []
    for c in list_containers(client):
        labels = c.get("Labels") or {}
        alive = owner_alive(labels)
        if everything:
            reason = "--all"
        elif alive is False:
            reason = "owner process is gone"
        else:
            continue
        out.append({"id": c["Id"], "name": (c.get("Names") or [""])[0].lstrip("/"),
                    "run": labels.get(L_RUN), "job": labels.get(L_JOB),
                    "host": labels.get(L_HOST), "pid": labels.get(L_PID), "reason": reason})
    if not dry_run:
        removed = set(_remove(client, [c["id"] for c in out]))
        out = [c for c in out if c["id"] in removed]
        reap_runtime_leftovers(client)
    return out


def reap_runtime_leftovers(client) -> list:
    """Kill gVisor processes (runsc-sandbox / runsc-gofer and their shims) left running for
    containers the daemon no longer knows: `docker rm` does not always remove them."""
    from harness.sandbox import runtime
    try:
        return runtime.reap_orphans(client)
    except Exception as exc:  # never let this stop a sweep
        log.warning("could not look for runsc leftovers: %s", exc)
        return []


def remove_run(client, run_id: str, wait: float = DAEMON_WAIT) -> list[str]:
    """Remove every container of this run (any state). A daemon that does not answer (it
    may be restarting) is asked again for up to `wait` seconds; after that the containers
    stay for the next run's sweep, which removes containers whose owner is gone."""
    end = time.monotonic() + wait
    while True:
        try:
            ids = [c["Id"] for c in list_containers(client, run_id)]
            break
        except Exception as exc:
            if time.monotonic() >= end:
                log.warning("could not list sandbox containers of run %s: %s; the next run, "
                            "or `scicode-harness sandbox sweep`, removes them", run_id, exc)
                return []
            time.sleep(0.5)
    return _remove(client, ids)


# ---- per-process registry: remove registered runs' containers on signals and at exit

_lock = threading.RLock()
_runs: dict[str, tuple] = {}    # run id -> (client factory, quiesce callback or None)
_installed = False
_owns_signals = False
_previous: dict[int, object] = {}
_cancels: list[Callable[[], None]] = []   # innermost last: what a signal does inside an event loop
_farewell: Optional[Callable[[int], None]] = None
EXIT_WITHIN = 8.0   # seconds from a signal to the exit, whatever the process was doing


def register_run(run_id: str, client_factory: Callable[[], object],
                 quiesce: Optional[Callable[[], None]] = None) -> None:
    """Make SIGINT/SIGTERM/atexit remove this run's containers (a fresh client is used).

    `quiesce` is called first: it must stop the run from creating containers and wait
    (briefly) for creations in flight, so none appears after the removal.
    """
    with _lock:
        _runs[run_id] = (client_factory, quiesce)
    install()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt (so every path that unwinds on
    Ctrl-C unwinds on it too) when `install(owns_signals=True)` asked for it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


def install(owns_signals: bool = False, farewell: Optional[Callable[[int], None]] = None) -> None:
    """Signal handlers and the atexit hook, once per process (signals: main thread only).
    owns_signals (a command, not a library caller): SIGTERM raises Terminated (exit 143 with
    a message, finished work kept) instead of the default action, a SIGINT ignored by the
    parent shell still interrupts, and the process leaves EXIT_WITHIN seconds after the
    signal even if its unwinding is stuck (`farewell(signum)` is called first: the message)."""
    global _installed, _owns_signals, _farewell
    with _lock:
        _owns_signals = _owns_signals or owns_signals
        _farewell = farewell or _farewell
        if _installed:
            return
        _installed = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                _previous[sig] = signal.getsignal(sig)
                if sig == signal.SIGINT and owns_signals and _previous[sig] == signal.SIG_IGN:
                    # inherited from a shell's `cmd &` (no job control): a run still ends on
                    # `kill -INT`, as its engine already does, instead of only half-stopping
                    _previous[sig] = signal.default_int_handler
                signal.signal(sig, _on_signal)
            except (ValueError, OSError):  # not allowed here (embedded interpreter)
                pass


def unregister_run(run_id: str) -> None:
    with _lock:
        _runs.pop(run_id, None)


def _cleanup_all() -> None:
    with _lock:
        runs = list(_runs.items())
        _runs.clear()
    for run_id, (factory, quiesce) in runs:
        if quiesce is not None:
            try:
                quiesce()
            except Exception as exc:
                log.warning("could not stop run %s from starting containers: %s", run_id, exc)
        try:
            client = factory()
        except Exception as exc:
            log.warning("cannot reach Docker to remove run %s's containers: %s", run_id, exc)
            continue
        remove_run(client, run_id)
        try:
            client.close()
        except Exception:
            pass


_signalled: list[int] = []


def run_atexit() -> None:
    """What atexit would do, for a caller that leaves with os._exit."""
    _cleanup_all()



def signalled() -> Optional[int]:
    """The first SIGINT/SIGTERM this process got through these handlers, if any."""
    return _signalled[0] if _signalled else None


def raise_if_signalled() -> None:
    """Raise the interrupt again if a signal came. Python drops an exception raised where it
    cannot propagate (a weakref callback, a __del__, e.g. inside an import), so the first
    raise from the handler may be lost; callers check here at safe points."""
    signum = signalled()
    if signum == signal.SIGTERM and _owns_signals:
        raise Terminated(signum)
    if signum is not None:
        raise KeyboardInterrupt


@contextmanager
def signals_cancel(cancel: Callable[[], None]) -> Iterator[None]:
    """Inside, a SIGINT/SIGTERM that would raise calls `cancel` instead (it must only schedule
    a cancellation, e.g. with loop.call_soon_threadsafe). An event loop needs this: an
    exception raised at whatever line runs, inside asyncio's or anyio's own bookkeeping,
    corrupts it and the run hangs; a cancelled task unwinds where it awaits."""
    with _lock:
        _cancels.append(cancel)
    try:
        if _signalled:   # came before: cancel at the first await
            cancel()
        yield
    finally:
        with _lock:
            _cancels.remove(cancel)


def _leave_by(deadline: float, signum: int) -> None:
    time.sleep(max(deadline - time.monotonic(), 1.0))
    try:
        if _farewell is not None:
            _farewell(signum)
    finally:
        os._exit(128 + signum)


def _on_signal(signum, frame):
    if _signalled:   # a second Ctrl-C/SIGTERM: leave now (stored work is line-atomic)
        os._exit(128 + signum)
    deadline = time.monotonic() + EXIT_WITHIN
    _signalled.append(signum)
    _cleanup_all()
    prev = _previous.get(signum)
    terminate = signum == signal.SIGTERM and _owns_signals and prev in (signal.SIG_DFL, None)
    if _owns_signals and (terminate or callable(prev)):   # never hang: leave by the deadline
        threading.Thread(target=_leave_by, args=(deadline, signum), name="exit-deadline",
                         daemon=True).start()
    if (terminate or callable(prev)) and _cancels:
        _cancels[-1]()
        return
    if terminate:
        raise Terminated(signum)
    if callable(prev):
        prev(signum, frame)
    elif prev == signal.SIG_IGN:
        return
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
