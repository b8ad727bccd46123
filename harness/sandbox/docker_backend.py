"""Docker backend: one hardened, short-lived container per job (docker SDK only).

Every job runs in its own container, removed afterwards. The container gets no
network, a read-only root with a size-capped tmpfs at /tmp, no capabilities,
no-new-privileges, the default seccomp profile, a non-root user, pids / memory
(swap equal) / CPU limits, nofile/fsize/core ulimits, an init process, no log
driver and an environment made only of the fixed values in ENV (nothing of the
caller's). No host path and never the runtime socket is mounted.

Transport: the runner's payload goes in over the attach socket's stdin (the
container is created with ``stdin_open=True``, so StdinOnce) and stdout/stderr
come back over the same hijacked connection, demultiplexed here from the 8-byte
frame headers. No bind mounts, no ``put_archive``, no ``logs()``: it works the
same with a remote DOCKER_HOST or Podman's Docker-compatible socket.

Outcomes: a host-side deadline then a forced removal (SIGKILL to PID 1 ends the
whole PID namespace) gives ``timeout``; ``State.OOMKilled`` (or exit 137 with a
MemoryError in the output) gives ``oom``; daemon errors, a missing image or a
broken connection give ``infra`` with the cause in stderr, never a model failure.

Runtime: runc (default) or gVisor's runsc (harness.sandbox.runtime), checked against
the daemon's registered runtimes at start-up. Under runsc the program's process limit is
RLIMIT_NPROC (gVisor enforces it in its own kernel) and the host pids cgroup gets room for
gVisor's threads. Every container start has its own deadline (60 s): past it the job is
`infra` and the container and its runtime processes are removed.

Warm single-use pool: up to N containers (default 2 x workers, so the next one has
finished its imports by the time a worker needs it) are created, attached and
started in the background; the runner in each has imported numpy and scipy and
is blocked reading stdin. A job takes one, writes its payload and the container
is removed afterwards (off the job's path, by a reaper thread): start-up and
imports are hidden, state is never reused. Jobs whose container limits differ
from the backend's get a cold container. In tests mode a job is complete as soon
as the runner's end-of-stderr line and report have arrived; its exit status is
the one the runner exits with right after them.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Optional

from harness.sandbox import JOB_ENV, Backend, Job, Limits, Outcome, SandboxUnavailable
from harness.util import faultpoint
from harness.sandbox import cleanup, image_lookup, runtime as rt
from harness.sandbox.envs import DEFAULT_ENV
from harness.sandbox.docker_pool import (WarmPool, Demux, Reaper, Slot, close_sock,
                                         limits_key, short_error)
from harness.sandbox.runner import (StdoutCapture, classify, memory_evidence, new_marker,
                                    parse_size, payload_chunks, runner_argv)

log = logging.getLogger(__name__)

FALLBACK_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NONROOT_USER = "65534:65534"
ENV = dict(JOB_ENV, HOME="/tmp")
NOFILE = 1024
KILL_GRACE = 10.0          # seconds allowed for the daemon to report a finished container
READ_CHUNK = 1 << 16


def host_oom_kills() -> Optional[int]:
    """The host kernel's count of OOM kills (/proc/vmstat is not namespaced), or None."""
    try:
        with open("/proc/vmstat", "rb") as fh:
            for line in fh:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _is_root_user(user: str) -> bool:
    name = (user or "").split(":", 1)[0]
    return name in ("", "0", "root")


def _docker():
    import docker  # imported lazily: the process backend must work without the SDK
    return docker


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, image: Optional[str] = None, explicit_image: bool = False, workers: int = 1,
                 run_id: Optional[str] = None, limits: Optional[Limits] = None, client=None,
                 warm: bool = True, preload: Optional[list[str]] = None,
                 runtime: Optional[str] = None, sweep: bool = True,
                 warm_size: Optional[int] = None, env: str = DEFAULT_ENV):
        docker = _docker()
        self.limits = limits or Limits()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.workers = max(int(workers), 1)
        self.preload = list(preload or [])
        self._pool_size = 4 * self.workers + 8
        try:
            self.client = client or docker.from_env(max_pool_size=self._pool_size, timeout=120)
            self.client.ping()
        except Exception as exc:
            raise SandboxUnavailable(
                f"Docker daemon not reachable ({short_error(exc)}): start Docker (or set DOCKER_HOST), "
                "or pass --sandbox process") from None
        # runtime: the name recorded (runc | runsc); _hc_runtime: what HostConfig asks for
        self.runtime, self._hc_runtime = rt.resolve(self.client, runtime)
        self.start_timeout = rt.start_timeout()
        self._tls = str(getattr(self.client.api, "base_url", "")).startswith("https://")
        self.sandbox_env = env   # the library era whose lock the image must carry
        self.image_ref, self.image, cfg = self._resolve_image(image, explicit_image)
        user = cfg.get("User") or ""
        self.user = user if not _is_root_user(user) else NONROOT_USER
        path = next((e.split("=", 1)[1] for e in (cfg.get("Env") or []) if e.startswith("PATH=")),
                    FALLBACK_PATH)
        self.env = dict(ENV, PATH=path)
        self.argv = runner_argv("python3", self.preload)
        self._closed = False       # no new containers
        self._shut = False         # close() ran
        # reentrant: the signal handler's quiesce runs on the main thread, which may hold it
        self._lock = threading.RLock()
        self._live: set[str] = set()
        self._reaper = Reaper(self, backlog=2 * self.workers + 2)
        self._inflight = 0
        cleanup.register_run(self.run_id, self._client_factory, self._quiesce)
        if sweep:
            try:
                gone = cleanup.sweep(self.client)
                if gone:
                    log.info("removed %d sandbox container(s) left by dead runs", len(gone))
            except Exception as exc:
                log.warning("sweep of dead runs' containers failed: %s", exc)
        size = 2 * self.workers if warm_size is None else int(warm_size)
        self.pool = WarmPool(self, size) if warm and size > 0 else None

    # ---- setup -------------------------------------------------------------------------

    @staticmethod
    def _client_factory():
        return _docker().from_env(timeout=30)

    def _resolve_image(self, image: Optional[str], explicit: bool):
        docker = _docker()
        try:
            env = self.sandbox_env
            if image:
                img = image_lookup.check_image(self.client, image, explicit, env=env)
            else:
                img = image_lookup.find_image(self.client, env=env)
                if img is None:
                    raise SandboxUnavailable(
                        f"sandbox image {image_lookup.default_tag(env)} ({env} environment) not found: "
                        f"build it with `scicode-harness image build --env {env}` (or pass --sandbox process)")
        except image_lookup.ImageError as exc:
            raise SandboxUnavailable(str(exc)) from None
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(f"sandbox image {image} not found: build it "
                                     "with `scicode-harness image build`") from None
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(f"cannot inspect sandbox image: {short_error(exc)}") from None
        tags = img.attrs.get("RepoTags") or []
        ref = image or (tags[0] if tags else img.id)
        return ref, img.id, (img.attrs.get("Config") or {})

    def _host_config(self, lim: Limits) -> dict:
        docker = _docker()
        mem = parse_size(lim.memory)
        fsize = parse_size(lim.fsize)
        tmpfs = parse_size(lim.tmpfs)
        ulimits = [docker.types.Ulimit(name="nofile", soft=NOFILE, hard=NOFILE),
                   docker.types.Ulimit(name="fsize", soft=fsize, hard=fsize),
                   docker.types.Ulimit(name="core", soft=0, hard=0)]
        pids = int(lim.pids)
        if self.runtime == "runsc":
            # The host pids cgroup counts gVisor's own threads and ptrace stubs, not the
            # program's processes: at the job's limit the Sentry dies (Go fatal error, exit 2).
            # gVisor enforces RLIMIT_NPROC inside its own kernel: that caps the program.
            ulimits.append(docker.types.Ulimit(name="nproc", soft=pids, hard=pids))
            pids = rt.host_pids(pids)
        return self.client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={tmpfs}"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=pids,
            mem_limit=mem,
            memswap_limit=mem,
            nano_cpus=int(float(lim.cpus) * 1e9),
            ulimits=ulimits,
            init=True,
            ipc_mode="private",
            log_config=docker.types.LogConfig(type="none"),
            runtime=self._hc_runtime,
        )

    def create_kwargs(self, lim: Limits, job_id: str) -> dict:
        """Everything passed to the Engine's create call (exposed for tests and audits)."""
        return dict(image=self.image, command=self.argv, user=self.user, stdin_open=True,
                    tty=False, environment=dict(self.env), network_disabled=True,
                    working_dir="/tmp", hostname="sandbox",
                    labels=cleanup.container_labels(self.run_id, job_id),
                    host_config=self._host_config(lim), use_config_proxy=False)

    def _start(self, lim: Limits, job_id: str, command: Optional[list[str]] = None) -> Slot:
        """Create, attach, start; on any failure remove what was made and re-raise.
        `command`: a service's program (harness.sandbox.service) instead of the runner."""
        api = self.client.api
        kwargs = self.create_kwargs(lim, job_id)
        if command is not None:
            kwargs["command"] = command
        cid = sock = None
        with self._lock:
            if self._closed:
                raise RuntimeError("backend is closed")
            self._inflight += 1
        try:
            cid = api.create_container(**kwargs)["Id"]
            with self._lock:
                self._live.add(cid)
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                  "stream": 1})
            if command is None:
                faultpoint.point("container_start")
            if self._closed:   # shut (Ctrl-C) while this one was being made
                raise RuntimeError("backend is closed")
            rt.start(api, cid, self.start_timeout)
            return Slot(cid, sock, limits_key(lim) if command is None else None, self._tls)
        except BaseException as exc:
            if sock is not None:
                close_sock(sock)
            if cid is not None:
                hung = isinstance(exc, rt.StartTimeout)
                if hung:       # a hung start holds the container: kill its runtime first
                    rt.reap(cid)
                self._remove(cid)
                if hung:       # and what the runtime left behind after `rm -f`
                    rt.reap(cid)
            raise
        finally:
            with self._lock:
                self._inflight -= 1

    def service(self, source: str, name: str, args: Optional[list[str]] = None):
        from harness.sandbox.service import DockerService
        return DockerService(self, source, name, args)

    def start_service(self, argv: list[str], name: str) -> Slot:
        """A container like a sandbox's, running `argv` for the whole run (never model code)."""
        return self._start(self.limits, name, command=argv)

    def discard_service(self, slot: Slot) -> None:
        self._discard(slot)

    def _quiesce(self, wait: float = 3.0) -> None:
        """Refuse new containers and wait for creations in flight (signal/exit path)."""
        with self._lock:
            self._closed = True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            with self._lock:
                if self._inflight == 0:
                    return
            time.sleep(0.02)

    def _remove(self, cid: str) -> None:
        try:
            self.client.api.remove_container(cid, force=True, v=True)
        except Exception as exc:
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                log.warning("could not remove sandbox container %s: %s", cid[:12], short_error(exc))
        with self._lock:
            self._live.discard(cid)

    def _discard(self, slot: Slot) -> None:
        close_sock(slot.sock)
        self._remove(slot.cid)

    def _discard_async(self, slot: Slot) -> None:
        threading.Thread(target=self._discard, args=(slot,), daemon=True).start()

    # ---- running -----------------------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        t_start = time.monotonic()
        slot = self.pool.take(job.limits) if self.pool is not None else None
        if slot is None:
            try:
                slot = self._start(job.limits, job.job_id)
            except Exception as exc:
                return self._infra(t_start, f"could not start a sandbox container: {short_error(exc)}")
        try:
            return self._execute(slot, job)
        finally:
            self._reaper.submit(slot)

    @staticmethod
    def _send(slot: Slot, job: Job, marker: str) -> bool:
        """Write the payload on the attach socket; True when the deadline passed meanwhile."""
        try:
            for part in payload_chunks(job, marker):
                slot.raw.sendall(part)
            if not slot.tls:
                try:
                    slot.raw.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        except socket.timeout:
            return True
        except OSError:
            pass    # the container stopped reading (exited early): read what it said
        return False

    def _execute(self, slot: Slot, job: Job) -> Outcome:
        lim = job.limits
        marker = new_marker()
        tests_mode = job.tests is not None
        out = StdoutCapture(lim.output, marker)
        err = StdoutCapture(lim.output, marker)     # strips the runner's end-of-stderr line
        demux = Demux(out, err)
        raw = slot.raw
        t0 = time.monotonic()
        deadline = t0 + float(lim.timeout)
        timed_out = False
        report = None
        kills = host_oom_kills()
        try:
            raw.settimeout(max(deadline - time.monotonic(), 0.001))
            timed_out = self._send(slot, job, marker)
            while not timed_out:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                raw.settimeout(remaining)
                try:
                    chunk = raw.recv(READ_CHUNK)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                demux.feed(chunk)
                if tests_mode and out.seen and err.seen:
                    report = out.report()      # the runner is done: it only exits after this
                    if report is not None:
                        break
        except OSError as exc:
            return self._infra(t0, f"lost the attach stream: {short_error(exc)}")
        duration = time.monotonic() - t0
        exit_code = None
        oom = False
        if timed_out:
            self._remove(slot.cid)    # SIGKILL to PID 1 ends the namespace, then remove
        elif report is not None:
            exit_code = 0 if report.all_passed else 1   # what the runner exits with next
        else:
            try:
                budget = max(deadline - time.monotonic(), 0) + KILL_GRACE
                exit_code = self.client.api.wait(slot.cid, timeout=budget)["StatusCode"]
                if exit_code != 0:
                    state = self.client.api.inspect_container(slot.cid)["State"]
                    oom = bool(state.get("OOMKilled"))
            except Exception as exc:
                if time.monotonic() < deadline:
                    return self._infra(t0, "could not read the container's exit status: "
                                           f"{short_error(exc)}")
                timed_out, exit_code = True, None     # streams closed, program still running
                self._remove(slot.cid)
            duration = time.monotonic() - t0
        out.finish()
        err.finish()
        stdout, stderr = out.text(), err.text()
        if report is None and tests_mode:
            report = out.report()
        if not oom and exit_code == 137 and memory_evidence(stderr, report):
            oom = True
        status = classify(exit_code, job.tests is not None, report, timed_out, oom)
        if status not in ("ok", "pass") and not timed_out and not oom and report is None \
                and exit_code in (137, 143):
            if self._killed_outside(slot):
                return self._infra(t0, f"the container was stopped from outside (exit {exit_code}: "
                                       "docker kill/stop or a daemon shutdown), not by its program")
            # Docker can lose the OOM report (gVisor's shim, under load): the kernel's own count
            if exit_code == 137 and kills is not None and (host_oom_kills() or 0) > kills:
                oom = True
                status = classify(exit_code, job.tests is not None, report, timed_out, oom)
        return Outcome(status=status, exit_code=exit_code, duration=duration, stdout=stdout,
                       stderr=stderr, truncated=out.truncated or err.truncated,
                       timed_out=timed_out, oom_killed=oom, backend=self.name, image=self.image,
                       report=report)

    def _killed_outside(self, slot: Slot) -> bool:
        """Did someone (docker kill/stop, a stopping daemon) signal this container? The
        harness itself only removes containers on a timeout or at shutdown."""
        if self._closed:
            return False
        try:
            events = self.client.api.events(
                since=f"{slot.wall - 1:.3f}", until=f"{time.time() + 0.5:.3f}", decode=True,
                filters={"container": slot.cid, "event": ["kill", "stop"]})
            try:
                return any(True for _ in events)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
        except Exception as exc:   # the daemon is going away: that is outside too
            log.warning("cannot read events of container %s: %s", slot.cid[:12], short_error(exc))
            return True

    def _infra(self, t0: float, why: str) -> Outcome:
        return Outcome(status="infra", exit_code=None, duration=time.monotonic() - t0, stdout="",
                       stderr=f"sandbox infrastructure error: {why}", truncated=False,
                       timed_out=False, oom_killed=False, backend=self.name, image=self.image)

    def jobs_left(self, n: int) -> None:
        if self.pool is not None:   # no container is warmed that no job would take
            self.pool.set_left(n)

    # ---- teardown ----------------------------------------------------------------------

    def stats(self) -> dict:
        p = self.pool
        return {"warm_hits": p.hits if p else 0, "warm_misses": p.misses if p else 0}

    def close(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = self._closed = True
        if self.pool is not None:
            self.pool.close()
        self._reaper.close()
        with self._lock:
            live = list(self._live)
        for cid in live:
            self._remove(cid)
        cleanup.remove_run(self.client, self.run_id)
        cleanup.unregister_run(self.run_id)
        try:
            self.client.close()
        except Exception:
            pass


def probe_runtime(client, image: str, name: str, timeout: float = 60.0) -> str:
    """Run `uname -r` in a throw-away container under runtime `name`; the kernel it reports."""
    lim = Limits(timeout=timeout, memory="256m")
    be = DockerBackend(image=image, explicit_image=True, client=client, limits=lim, warm=False,
                       runtime=name, sweep=False)
    try:
        out = be.run(Job(code="import os; print(os.uname().release)", limits=lim))
    finally:
        be.close()
    if out.status != "ok":
        raise RuntimeError(f"probe under {name} ended {out.status}: {out.stderr.strip()[-200:]}")
    return out.stdout.strip()
