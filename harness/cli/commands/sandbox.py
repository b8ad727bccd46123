"""`scicode-harness sandbox run FILE` and `scicode-harness sweep`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from harness.sandbox import OutcomeStatus

app = typer.Typer(help="Run a program in the sandbox the evaluation uses.", no_args_is_help=True,
                  add_completion=False)

EXIT: dict[OutcomeStatus, int] = {"ok": 0, "error": 1, "timeout": 1, "oom": 1, "infra": 2}


@app.callback()
def _group() -> None:
    """Sandbox commands."""


@app.command("run")
def run(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                    help="Python file to run as __main__."),
        backend: str = typer.Option("auto", "--backend", help="docker | bwrap | process | auto"),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds of wall time."),
        memory: Optional[str] = typer.Option(None, "--memory", help="Memory limit, e.g. 512m, 2g."),
        cpus: Optional[float] = typer.Option(None, "--cpus", help="CPUs (Docker CPU quota)."),
        image: Optional[str] = typer.Option(None, "--image", help="Sandbox image (Docker)."),
        runtime: str = typer.Option("runc", "--sandbox-runtime", "--runtime",
                                    help="Docker OCI runtime: runc | runsc (gVisor)."),
        as_json: bool = typer.Option(False, "--json", help="Print the Outcome as one JSON object."),
        ) -> None:
    """Run FILE in a fresh sandbox and print the Outcome.

    Exit status: 0 ok; 1 the program failed (error, timeout, oom); 2 infrastructure.
    """
    from harness.sandbox import Job, Limits, Outcome, SandboxUnavailable
    from harness.sandbox.registry import get_backend

    limits = Limits()
    if timeout is not None:
        limits.timeout = timeout
    if memory is not None:
        limits.memory = memory
    if cpus is not None:
        limits.cpus = cpus
    try:
        from harness.sandbox.runner import parse_size
        parse_size(limits.memory)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--memory")
    if runtime not in ("runc", "runsc"):
        raise typer.BadParameter("choose runc or runsc", param_hint="--sandbox-runtime")
    code = file.read_text(encoding="utf-8")
    job = Job(code=code, limits=limits)
    try:
        be = get_backend(backend, image=image, explicit_image=bool(image), workers=1,
                         limits=limits, runtime=runtime,
                         **({"warm": False} if backend != "process" else {}))
    except SandboxUnavailable as exc:
        outcome = Outcome(status="infra", exit_code=None, duration=0.0, stdout="",
                          stderr=f"sandbox unavailable: {exc}", truncated=False,
                          timed_out=False, oom_killed=False, backend=backend, image=image)
    else:
        with be:
            outcome = be.run(job)
    if as_json:
        sys.stdout.write(json.dumps(outcome.to_dict()) + "\n")
    else:
        _print_human(outcome)
    raise typer.Exit(EXIT.get(outcome.status, 1))


def _print_human(o) -> None:
    flags = [k for k in ("truncated", "timed_out", "oom_killed") if getattr(o, k)]
    typer.echo(f"status: {o.status}   exit code: {o.exit_code}   duration: {o.duration:.3f}s   "
               f"backend: {o.backend}" + (f"   image: {o.image}" if o.image else "")
               + (f"   [{', '.join(flags)}]" if flags else ""))
    if o.stdout:
        typer.echo("---- stdout")
        typer.echo(o.stdout.rstrip("\n"))
    if o.stderr:
        typer.echo("---- stderr")
        typer.echo(o.stderr.rstrip("\n"))


def sweep(all_: bool = typer.Option(False, "--all", help="Remove every harness container, "
                                    "not only those of runs whose process is gone."),
          dry_run: bool = typer.Option(False, "--dry-run", help="List, do not remove."),
          ) -> None:
    """Remove sandbox containers left behind by dead runs."""
    from harness.sandbox import cleanup
    from harness.sandbox.registry import SandboxUnavailable, docker_client
    try:
        client = docker_client(4)
    except SandboxUnavailable as exc:
        typer.echo(f"no Docker daemon answers ({exc}); nothing to sweep", err=True)
        raise typer.Exit(2)
    found = cleanup.sweep(client, everything=all_, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for c in found:
        typer.echo(f"{verb} {c['id'][:12]} {c['name']} run={c['run']} job={c['job']} "
                   f"host={c['host']} pid={c['pid']} ({c['reason']})")
    live = [c for c in cleanup.list_containers(client)] if not all_ else []
    typer.echo(f"{verb} {len(found)} container(s)"
               + (f"; {len(live)} belong to live runs or other hosts" if live else ""))
