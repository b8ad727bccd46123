"""Pick the sandbox backend: ``docker`` (default when a daemon answers) or ``process``.

``auto`` never falls back silently: without a reachable Docker daemon it raises
SandboxUnavailable with one line naming both fixes.
"""
from __future__ import annotations

from typing import Literal, Optional, get_args

from harness.sandbox import Backend, Limits, SandboxUnavailable

SandboxKind = Literal["auto", "docker", "process"]
KINDS: tuple[SandboxKind, ...] = get_args(SandboxKind)


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


def get_backend(kind: str = "auto", image: Optional[str] = None, explicit_image: bool = False,
                workers: int = 1, run_id: Optional[str] = None,
                limits: Optional[Limits] = None, **options) -> Backend:
    """A ready backend. `options` go to the backend (e.g. warm=False, python=...)."""
    kind = (kind or "auto").lower()
    if kind not in KINDS:
        raise SandboxUnavailable(f"unknown sandbox {kind!r}; choose one of {', '.join(KINDS)}")
    runtime = options.get("runtime")
    if kind == "process":
        if runtime not in (None, "runc"):
            raise SandboxUnavailable(f"--sandbox-runtime {runtime} needs the docker sandbox, "
                                     "not --sandbox process")
        options.pop("runtime", None)
        from harness.sandbox.process_backend import ProcessBackend
        return ProcessBackend(limits=limits, workers=workers, **options)
    try:
        client = docker_client(4 * max(int(workers), 1) + 8)
    except SandboxUnavailable as exc:
        raise SandboxUnavailable(
            f"no Docker daemon answers ({exc}): start Docker (or point DOCKER_HOST at one), "
            "or pass --sandbox process to run jobs as local processes with weaker isolation"
        ) from None
    from harness.sandbox.docker_backend import DockerBackend
    return DockerBackend(image=image, explicit_image=explicit_image, workers=workers,
                         run_id=run_id, limits=limits, client=client, **options)
