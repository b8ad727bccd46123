"""Pick the sandbox backend: ``docker``, ``bwrap``, ``process``, or ``auto``.

``auto`` takes the strongest isolation this host gives, in tiers, and says which and why
(``Backend.tier`` / ``tier_reason``; the results JSON records them):

1. ``docker`` when a daemon answers;
2. ``bwrap`` when a probe job runs under bubblewrap with full isolation;
3. ``bwrap-noproc``: the same without a fresh /proc (e.g. a container that masks /proc);
4. ``process``, with its warning: the candidate can read the host's files, targets included.
"""
from __future__ import annotations

import logging
from typing import Literal, Optional, get_args

from harness.sandbox import Backend, Limits, SandboxUnavailable

SandboxKind = Literal["auto", "docker", "bwrap", "process"]
KINDS: tuple[SandboxKind, ...] = get_args(SandboxKind)
log = logging.getLogger(__name__)


def docker_client(max_pool_size: int):
    """A pinged client, or SandboxUnavailable with the cause."""
    try:
        import docker
    except ImportError as exc:
        raise SandboxUnavailable(f"the docker SDK is not installed ({exc})") from None
    try:
        client = docker.from_env(max_pool_size=max_pool_size, timeout=120)
        client.ping()
        return client
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SandboxUnavailable(f"{type(exc).__name__}: {first}"[:300]) from None


def _no_runtime(kind: str, options: dict) -> None:
    runtime = options.pop("runtime", None)
    if runtime not in (None, "runc"):
        raise SandboxUnavailable(f"--sandbox-runtime {runtime} needs the docker sandbox, "
                                 f"not --sandbox {kind}")


def _bwrap(limits, workers: int, options: dict) -> Backend:
    from harness.sandbox.bwrap_backend import BwrapBackend
    opts = {k: v for k, v in options.items() if k in ("env", "venv", "preload", "proc")}
    return BwrapBackend(limits=limits, workers=workers, **opts)


def _process(limits, workers: int, options: dict) -> Backend:
    from harness.sandbox.process_backend import ProcessBackend
    opts = {k: v for k, v in options.items() if k in ("python", "preload", "isolate")}
    return ProcessBackend(limits=limits, workers=workers, **opts)


def _tiered(be: Backend, tier: str, why: str) -> Backend:
    be.tier, be.tier_reason = tier, why
    return be


def get_backend(kind: str = "auto", image: Optional[str] = None, explicit_image: bool = False,
                workers: int = 1, run_id: Optional[str] = None,
                limits: Optional[Limits] = None, **options) -> Backend:
    """A ready backend. `options` go to the backend (e.g. warm=False, python=..., env=...)."""
    kind = (kind or "auto").lower()
    if kind not in KINDS:
        raise SandboxUnavailable(f"unknown sandbox {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "process":
        _no_runtime(kind, options)
        return _tiered(_process(limits, workers, options), "process", "--sandbox process")
    if kind == "bwrap":
        _no_runtime(kind, options)
        be = _bwrap(limits, workers, options)
        return _tiered(be, "bwrap" if be.proc else "bwrap-noproc", "--sandbox bwrap")
    try:
        client = docker_client(4 * max(int(workers), 1) + 8)
    except SandboxUnavailable as exc:
        if kind == "docker":
            raise SandboxUnavailable(
                f"no Docker daemon answers ({exc}): start Docker (or point DOCKER_HOST at one), "
                "or pass --sandbox bwrap (or process) to run jobs without Docker") from None
        return _fallback(f"no Docker daemon answers ({exc})", limits, workers, options)
    from harness.sandbox.docker_backend import DockerBackend
    docker_opts = {k: v for k, v in options.items() if k not in ("python", "venv", "proc")}
    be = DockerBackend(image=image, explicit_image=explicit_image, workers=workers,
                       run_id=run_id, limits=limits, client=client, **docker_opts)
    return _tiered(be, "docker", "a Docker daemon answers")


def _fallback(no_docker: str, limits, workers: int, options: dict) -> Backend:
    """auto without Docker: bwrap (with /proc, then without), else process."""
    _no_runtime("auto", options)
    try:
        be = _bwrap(limits, workers, options)
    except SandboxUnavailable as exc:
        why = f"{no_docker}; bwrap unavailable ({exc})"
        be = _tiered(_process(limits, workers, options), "process", why)
        log.warning("sandbox: auto chose process isolation (%s): jobs can read the host's files, "
                    "the targets included", why)
        return be
    tier = "bwrap" if be.proc else "bwrap-noproc"
    why = f"{no_docker}; a bwrap probe job ran " + ("with full isolation" if be.proc
                                                     else "without /proc (the host refused --proc)")
    log.info("sandbox: auto chose %s (%s)", tier, why)
    return _tiered(be, tier, why)
