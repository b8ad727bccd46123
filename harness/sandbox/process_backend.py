"""Process backend (``--sandbox process``): for hosts without Docker. Weaker isolation.

Each job is ``python -c RUNNER_SOURCE`` (the harness's interpreter unless another
is configured) started in its own session, with:

* rlimits: address space = the memory limit, CPU seconds = timeout + 1, file
  size, open files (1024), core dumps 0, and processes (see below);
* a private scratch directory as cwd, HOME and TMPDIR, removed afterwards;
* an environment made only of HOME, TMPDIR, a minimal PATH and
  ``harness.sandbox.JOB_ENV`` (TZ=UTC, PYTHONHASHSEED=0, one BLAS/OpenMP thread,
  MPLBACKEND=Agg, malloc settings);
* output caps (head + tail per stream, like the Docker backend);
* a host-side deadline, after which the whole process group is SIGKILLed;
* where the kernel allows, ``unshare`` gives the job a private network namespace
  (no interfaces but a down loopback) and a private PID namespace whose init is
  the runner, so every process it started dies with it. When the harness runs as
  root and the interpreter is readable by ``nobody``, the job also drops to uid
  65534. Without the ``unshare`` binary, root falls back to ``unshare(CLONE_NEWNET)``
  through ctypes in a small bootstrap.

The backend probes once which of these work (``isolation`` says what it got) and
logs one warning per process that isolation is weaker than Docker's.

What it cannot stop (the red-team suite asserts the Docker backend does):

* **The host filesystem is visible.** Jobs read whatever their uid can read and
  write wherever it can write (/tmp, the user's home, the checkout, ...). Running
  as the harness's own uid, that includes the caller's files and, without a PID
  namespace, ``/proc/<harness pid>/environ``. Only RLIMIT_FSIZE caps a single
  file; many files can still fill a disk.
* **Root stays root** when the interpreter is not readable by ``nobody`` (e.g. a
  pyenv under /root): the job then runs as uid 0 with full capabilities, can read
  and change anything on the host, and RLIMIT_NPROC does not apply to root, so a
  fork bomb is bounded only by the timeout (and the host's pid_max).
* **RLIMIT_NPROC counts per user**, not per job: concurrent jobs share it, and
  when not dropping to a dedicated uid it is set to the user's current process
  count plus the pids limit.
* **Memory is address space, not resident memory.** RLIMIT_AS turns exhaustion
  into a MemoryError (reported as ``oom``) rather than a kill; programs that map
  much more than they touch may fail earlier than under Docker's cgroup limit.
* **No network namespace without unshare rights** (unprivileged user namespaces
  disabled and not root): the job then has the host's network.
* **Detached processes** (``setsid`` + double fork) escape the process-group kill
  when there is no PID namespace, and keep running after the job.
* **CPU share** is not limited (no cgroup): a job may use every core it can
  spawn threads on until its CPU-seconds rlimit or the deadline.
* Kernel attack surface, /dev, SysV IPC, abstract unix sockets (without a netns)
  and the runtime socket (if the uid can open it) are all shared with the host.
"""
from __future__ import annotations

import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

from harness.sandbox import JOB_ENV, Backend, Job, Limits, Outcome
from harness.sandbox.runner import (StdoutCapture, classify, memory_evidence, new_marker,
                                    parse_size, payload, runner_argv)

log = logging.getLogger(__name__)

NOBODY = 65534
NOFILE = 1024
EXIT_GRACE = 0.5           # seconds to wait for stream EOF after the main process ended
_warned = False
_warn_lock = threading.Lock()
_probe_cache: dict = {}
_probe_lock = threading.Lock()

# Run by the fallback wrapper (no prlimit/unshare binaries): limits, netns, drop, exec.
_BOOTSTRAP = r'''
import os, sys, resource, json
cfg = json.loads(sys.argv[1])
for name, value in cfg["rlimits"]:
    resource.setrlimit(getattr(resource, name), (value, value))
if cfg.get("netns"):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        sys.stderr.write("bootstrap: unshare(CLONE_NEWNET) failed\n")
        os._exit(125)
if cfg.get("uid") is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
argv = sys.argv[2:]
os.execv(argv[0], argv)
'''


def _warn_once() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning("sandbox: the process backend isolates jobs far less than Docker (host "
                "filesystem visible, no cgroups); use it only where Docker is unavailable")


def _probe(python: str) -> dict:
    """Which isolation wrapper works for this interpreter (cached per interpreter and euid)."""
    key = (python, os.geteuid())
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        result = _probe_uncached(python)
        _probe_cache[key] = result
        return result


def _works(argv: list[str], cwd: str) -> bool:
    check = ("import os, socket, numpy, scipy\n"
             "names = [n for _, n in socket.if_nameindex()]\n"
             "assert names in ([], ['lo']), names\n")
    try:
        p = subprocess.run(argv + ["-c", check], cwd=cwd, env={"PATH": "/usr/bin:/bin"},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        return p.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _probe_uncached(python: str) -> dict:
    unshare = shutil.which("unshare")
    prlimit = shutil.which("prlimit")
    root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="scicode-probe-")
    os.chmod(tmp, 0o755)
    try:
        candidates = []
        if unshare:
            base = [unshare, "--net", "--pid", "--fork", "--kill-child"]
            if root:
                candidates.append(dict(wrap=base + ["--setgid", str(NOBODY), "--setuid", str(NOBODY), "--"],
                                       netns=True, pidns=True, uid=NOBODY))
                candidates.append(dict(wrap=base + ["--"], netns=True, pidns=True, uid=0))
            else:
                candidates.append(dict(wrap=[unshare, "--user"] + base[1:] + ["--"],
                                       netns=True, pidns=True, uid=os.geteuid()))
        if root:
            candidates.append(dict(wrap=None, netns=True, pidns=False, uid=NOBODY, bootstrap=True))
            candidates.append(dict(wrap=None, netns=True, pidns=False, uid=0, bootstrap=True))
        for c in candidates:
            if c.get("bootstrap"):
                cfg = {"rlimits": [], "netns": True, "uid": c["uid"] if c["uid"] == NOBODY else None}
                argv = [python, "-S", "-c", _BOOTSTRAP, json.dumps(cfg), python]
            else:
                argv = c["wrap"] + [python]
            if _works(argv, tmp):
                c["prlimit"] = prlimit
                return c
        return dict(wrap=None, netns=False, pidns=False, uid=os.geteuid(), prlimit=prlimit)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _user_process_count(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            n += 1
                        break
        except (OSError, ValueError, IndexError):
            continue
    return n


def _rmtree(path: str) -> None:
    def onerror(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


class ProcessBackend(Backend):
    name = "process"
    image = None

    def __init__(self, limits: Optional[Limits] = None, workers: int = 1,
                 python: Optional[str] = None, preload: Optional[list[str]] = None,
                 isolate: bool = True):
        self.limits = limits or Limits()
        self.workers = max(int(workers), 1)
        self.python = python or sys.executable
        self.preload = list(preload or [])
        self.iso = _probe(self.python) if isolate else dict(wrap=None, netns=False, pidns=False,
                                                              uid=os.geteuid(), prlimit=None)
        self.isolation = {"netns": self.iso["netns"], "pidns": self.iso["pidns"],
                          "uid": self.iso["uid"],
                          "nproc": self.iso["uid"] != 0,
                          "wrapper": "unshare" if self.iso.get("wrap") else
                          ("bootstrap" if self.iso.get("bootstrap") else "none")}
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._closed = False
        _warn_once()

    # ---- command line ------------------------------------------------------------------

    def _rlimits(self, lim: Limits) -> list[tuple[str, int]]:
        cpu = int(math.ceil(float(lim.timeout))) + 1
        out = [("RLIMIT_AS", parse_size(lim.memory)), ("RLIMIT_CPU", cpu),
               ("RLIMIT_FSIZE", parse_size(lim.fsize)), ("RLIMIT_NOFILE", NOFILE),
               ("RLIMIT_CORE", 0)]
        uid = self.iso["uid"]
        if uid == NOBODY and os.geteuid() == 0:
            out.append(("RLIMIT_NPROC", int(lim.pids) * self.workers))
        elif uid != 0:
            out.append(("RLIMIT_NPROC", _user_process_count(uid) + int(lim.pids)))
        return out

    def _argv(self, lim: Limits) -> list[str]:
        rl = self._rlimits(lim)
        runner = runner_argv(self.python, self.preload)
        wrap = self.iso.get("wrap") or []
        if self.iso.get("prlimit") and not self.iso.get("bootstrap"):
            flags = {"RLIMIT_AS": "--as", "RLIMIT_CPU": "--cpu", "RLIMIT_FSIZE": "--fsize",
                     "RLIMIT_NOFILE": "--nofile", "RLIMIT_CORE": "--core",
                     "RLIMIT_NPROC": "--nproc"}
            return [self.iso["prlimit"]] + [f"{flags[n]}={v}" for n, v in rl] + ["--"] + wrap + runner
        boot = bool(self.iso.get("bootstrap"))
        cfg = {"rlimits": rl, "netns": boot and self.iso["netns"],
               "uid": NOBODY if boot and self.iso["uid"] == NOBODY else None}
        return [self.python, "-S", "-c", _BOOTSTRAP, json.dumps(cfg)] + wrap + runner

    def _env(self, home: str) -> dict:
        bindir = os.path.dirname(os.path.abspath(self.python))
        return dict(JOB_ENV, HOME=home, TMPDIR=home, PATH=f"{bindir}:/usr/bin:/bin")

    def service(self, source: str, name: str, args: Optional[list[str]] = None):
        from harness.sandbox.service import ProcessService
        bindir = os.path.dirname(os.path.abspath(self.python))
        env = dict(JOB_ENV, PATH=f"{bindir}:/usr/bin:/bin")
        return ProcessService([self.python, "-c", source, *(args or [])], env, cwd=tempfile.gettempdir())

    # ---- running -----------------------------------------------------------------------

    def _prepare(self, lim: Limits) -> tuple[list[str], str, dict, tuple, Callable[[], None]]:
        """argv, cwd, env, fds to pass and a cleanup for one job (a private scratch directory)."""
        scratch = tempfile.mkdtemp(prefix="scicode-job-")
        try:
            os.chmod(scratch, 0o700)
            if self.iso["uid"] == NOBODY and os.geteuid() == 0:
                os.chown(scratch, NOBODY, NOBODY)
        except OSError:
            _rmtree(scratch)
            raise
        return self._argv(lim), scratch, self._env(scratch), (), lambda: _rmtree(scratch)

    def run(self, job: Job) -> Outcome:
        lim = job.limits
        marker = new_marker()
        data = payload(job, marker)
        out = StdoutCapture(lim.output, marker)
        err = StdoutCapture(lim.output, marker)     # strips the runner's end-of-stderr line
        t0 = time.monotonic()
        if self._closed:
            return self._infra(t0, "backend is closed")
        try:
            argv, cwd, env, fds, cleanup = self._prepare(lim)
        except (OSError, ValueError) as exc:
            return self._infra(t0, f"cannot prepare the job: {exc}")
        try:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=cwd, env=env, close_fds=True,
                                        pass_fds=fds, start_new_session=True)
            except OSError as exc:
                return self._infra(t0, f"cannot start {argv[0]}: {exc}")
            with self._lock:
                self._procs.add(proc)
                closed = self._closed
            if closed:   # close() ran while this job started: it must not outlive the backend
                _killpg(proc)
            try:
                timed_out = self._pump(proc, data, out, err, t0 + float(lim.timeout))
            finally:
                _stop(proc)
                with self._lock:
                    self._procs.discard(proc)
            duration = time.monotonic() - t0
        finally:
            cleanup()
        return self._outcome(job, proc.returncode, out, err, timed_out, duration)

    def _outcome(self, job: Job, rc: Optional[int], out, err, timed_out: bool,
                 duration: float) -> Outcome:
        exit_code = None if rc is None else (128 - rc if rc < 0 else rc)
        out.finish()
        err.finish()
        stdout, stderr = out.text(), err.text()
        report = out.report() if job.tests is not None else None
        if rc is not None and -rc in (signal.SIGXCPU,) and not timed_out:
            timed_out = True      # CPU-seconds rlimit: a timeout by another clock
        oom = (not timed_out and exit_code not in (0, None) and memory_evidence(stderr, report))
        status = classify(exit_code, job.tests is not None, report, timed_out, oom)
        return Outcome(status=status, exit_code=None if timed_out else exit_code,
                       duration=duration, stdout=stdout, stderr=stderr,
                       truncated=out.truncated or err.truncated, timed_out=timed_out,
                       oom_killed=oom, backend=self.name, image=None, report=report)

    def _pump(self, proc, data: bytes, out, err, deadline: float) -> bool:
        """Feed stdin, drain stdout/stderr until EOF or the deadline; True on timeout."""
        sel = selectors.DefaultSelector()
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        view = memoryview(data)
        exited_at = None
        try:
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    return True
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > EXIT_GRACE:
                    break       # leftovers of the job hold the pipes open: they get killed
                wait = deadline - now
                if exited_at is None:
                    wait = min(wait, 0.25)
                else:
                    wait = min(wait, EXIT_GRACE)
                for key, _ in sel.select(wait):
                    if key.fileobj is proc.stdin:
                        try:
                            n = os.write(proc.stdin.fileno(), view[:1 << 16])
                            view = view[n:]
                        except BlockingIOError:
                            continue
                        except OSError:       # the job closed stdin / exited
                            view = view[:0]
                        if not view:
                            sel.unregister(proc.stdin)
                            try:
                                proc.stdin.close()
                            except OSError:
                                pass
                        continue
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.feed(chunk)
            return False
        finally:
            sel.close()

    def _infra(self, t0: float, why: str) -> Outcome:
        return Outcome(status="infra", exit_code=None, duration=time.monotonic() - t0, stdout="",
                       stderr=f"sandbox infrastructure error: {why}", truncated=False,
                       timed_out=False, oom_killed=False, backend=self.name, image=None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for p in procs:
            _killpg(p)


def _stop(proc: subprocess.Popen) -> None:
    """Kill the job's process group, reap it and close its pipes."""
    _killpg(proc)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
