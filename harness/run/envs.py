"""Sandbox environments in a run: a backend per library era, one verdict per candidate from them.

A candidate runs in the first environment; if it does not pass there it runs in the next, and the
step passes if it passes in any (SciCode-Verified's protocol; `full` runs every one). Each
environment's verdict is stored under its own key (its image is part of it), so resume and the
records keep them apart. The verifier always runs in the pinned 2024 environment.
"""
from __future__ import annotations

import uuid
from typing import Mapping, Optional

from harness.errors import UserError
from harness.run.config import RunConfig
from harness.sandbox import Backend, Limits
from harness.sandbox.envs import DEFAULT_ENV, VERIFIER_ENV
from harness.sandbox.registry import get_backend
from harness.sandbox.venvs import find_env

# A verdict that no other environment can change: the step has no target anywhere.
FINAL = ("pass", "no_target")
# What a record keeps of each environment's verdict.
ENV_KEYS = ("status", "error", "exit_code", "duration", "image", "stderr_tail")


def open_backends(config: RunConfig, limits: Limits, workers: int) -> dict[str, Backend]:
    """{env: backend} for the run's environments, plus the verifier's (strict grading) when the
    run does not use it. Closes what it opened if one fails."""
    sb = config.sandbox
    wanted = list(sb.envs)
    if config.grading.mode == "strict" and VERIFIER_ENV not in wanted:
        wanted.append(VERIFIER_ENV)
    out: dict[str, Backend] = {}
    try:
        for i, env in enumerate(wanted):
            options: dict = {"env": env}
            if sb.kind in ("process", "auto"):   # auto may fall back to process
                options["python"] = _process_python(config, env, required=sb.kind == "process")
            own_image = sb.image if i == 0 else None   # --sandbox-image names the first env's image
            if env not in sb.envs and sb.kind in ("docker", "auto"):
                options["warm"] = False   # the verifier's environment: no candidate runs there
            out[env] = get_backend(sb.kind, image=own_image, explicit_image=bool(own_image),
                                   workers=workers, run_id=uuid.uuid4().hex[:12], limits=limits,
                                   runtime=sb.runtime, **options)
    except BaseException:
        for be in out.values():
            be.close()
        raise
    return out


def _process_python(config: RunConfig, env: str, required: bool = True) -> Optional[str]:
    """The process backend's interpreter for `env`: $SCICODE_PROCESS_PYTHON[_<ENV>], else the
    built environment (`scicode-harness env build`), else (2024 only) the harness's own."""
    sb = config.sandbox
    got = sb.process_python if env == DEFAULT_ENV else sb.env_pythons.get(env)
    built = find_env(env)
    got = got or (str(built / "bin" / "python") if built else None)
    if got or env == DEFAULT_ENV or not required:
        return got
    raise UserError(f"--sandbox process needs an interpreter for the {env} environment: set "
                    f"SCICODE_PROCESS_PYTHON_{env} to a Python whose packages follow "
                    f"sandbox_image/requirements-{env}.lock, or run `scicode-harness env build "
                    f"--env {env}` (or use --sandbox docker)")


def next_env(envs: tuple, tried: Mapping[str, dict], full: bool) -> Optional[str]:
    """The environment to run the candidate in next, or None when its verdict is settled."""
    if not full and any(r["status"] in FINAL for r in tried.values()):
        return None
    if any(r["status"] == "no_target" for r in tried.values()):
        return None
    return next((e for e in envs if e not in tried), None)


def combine(envs: tuple, tried: Mapping[str, dict]) -> dict:
    """One record from each environment's verdict: the first passing environment's, else the
    first environment's; with several environments, `env` says which and `envs` keeps them all."""
    passed = [e for e in envs if e in tried and tried[e]["status"] == "pass"]
    decided = passed[0] if passed else next(e for e in envs if e in tried)
    rec = dict(tried[decided])
    if len(envs) > 1:
        rec["env"] = decided
        rec["envs"] = {e: {k: tried[e].get(k) for k in ENV_KEYS} for e in envs if e in tried}
    return rec


def summary(envs: tuple, full: bool, backends: Mapping[str, Backend], records: list[dict]) -> dict:
    """The results JSON's `sandbox_envs` block: per environment its image, what ran and passed
    there; and the steps a later environment rescued (failed in the first, passed in a later)."""
    ran: dict[str, dict] = {e: {} for e in envs}
    rescued, only = [], {e: [] for e in envs}
    for r in records:
        per = r.get("envs") or ({envs[0]: r} if "backend" in r else {})   # "backend": it ran
        for e, v in per.items():
            if e in ran:
                ran[e][v["status"]] = ran[e].get(v["status"], 0) + 1
        first = per.get(envs[0])
        if r["status"] == "pass" and first is not None and first["status"] != "pass":
            rescued.append({"step_id": r["step_id"], "sample": r["sample"], "env": r.get("env"),
                            envs[0]: first["status"]})
        passed = [e for e in envs if e in per and per[e]["status"] == "pass"]
        if len(envs) > 1 and len(passed) == 1 and (len(per) == len(envs) or passed[0] != envs[0]):
            only[passed[0]].append(r["step_id"])
    return {"envs": list(envs), "full": full,
            # an image id (docker), else the interpreter (process)
            "images": {e: backends[e].image or getattr(backends[e], "python", None) for e in envs if e in backends},
            "counts": ran, "passed": {e: ran[e].get("pass", 0) for e in envs},
            "rescued": len(rescued), "rescued_steps": rescued,
            "passed_only_in": {e: sorted(set(v)) for e, v in only.items()}}


def isolation(backend: Backend) -> dict:
    """The results JSON's `sandbox_isolation`: the tier, why, and whether candidates could read
    the targets file (only under process: it sees the host's files)."""
    return {"tier": backend.tier or backend.name, "why": backend.tier_reason,
            "targets_readable": backend.name == "process"}


def isolation_line(backend: Backend) -> str:
    """One line for the start of a run that did not get Docker, else ''."""
    if backend.tier in (None, "docker") or backend.tier_reason.startswith("--sandbox"):
        return "" if backend.name != "process" else TARGETS_READABLE
    if backend.name == "process":
        return f"sandbox auto: process isolation only ({backend.tier_reason}); {TARGETS_READABLE}"
    return f"sandbox auto: {backend.tier} ({backend.tier_reason})"


TARGETS_READABLE = ("warning: under --sandbox process candidate code can read the host's files, "
                    "the targets file included (strict grading cannot keep `target` from it)")
