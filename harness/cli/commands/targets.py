"""`scicode-harness targets build|check`: reference targets from gold solutions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Reference targets regenerated from gold code (dev split, your own problems).",
                  no_args_is_help=True, add_completion=False)


@app.command("build")
def build_cmd(
    split: Annotated[str, typer.Option(help="split whose gold code is run (dev ships gold code)")] = "dev",
    out: Annotated[Optional[Path], typer.Option(help="h5 file to write (default: the harness cache's <split>.h5)")] = None,
    problems: Annotated[Optional[Path], typer.Option(help="your own problems: SciCode-format JSONL with gold code")] = None,
    backend: Annotated[str, typer.Option(help="sandbox backend: docker | process | auto")] = "auto",
    runs: Annotated[int, typer.Option(help="runs per step; values that differ between runs are reported")] = 2,
    workers: Annotated[Optional[int], typer.Option(help="jobs in parallel (default: min(4, CPUs))")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="seconds per job (default: the sandbox default)")] = None,
    memory: Annotated[str, typer.Option(help="memory limit per job (dev 10.11's gold code peaks at ~2.3 GB)")] = "4g",
    image: Annotated[Optional[str], typer.Option(help="sandbox image (docker backend)")] = None,
    step: Annotated[Optional[list[str]], typer.Option(help="only these step ids (repeatable; for debugging)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="also write the build report as JSON here")] = None,
):
    """Run every step's gold code with its tests in record mode and write the targets."""
    import dataclasses

    from harness.errors import HarnessError
    from harness.sandbox import Limits, SandboxUnavailable
    from harness.targets import build as targets_build

    if out is None:
        from harness.util.paths import targets_path
        out = targets_path(problems.stem if problems else split)
    if runs < 1:
        typer.echo("targets build: --runs must be >= 1", err=True)
        raise typer.Exit(2)
    be = None
    try:
        loaded = targets_build.load_problems(split, problems)
        targets_build.plan_steps(loaded)        # fail fast (no gold code, bad file) before starting a sandbox
        from harness.sandbox.registry import get_backend
        nw = workers or targets_build.default_workers()
        limits = Limits()
        if memory:
            limits = dataclasses.replace(limits, memory=memory)
        if timeout:
            limits = dataclasses.replace(limits, timeout=float(timeout))
        be = get_backend(backend, image=image, explicit_image=image is not None, workers=nw, limits=limits)
        rep = targets_build.build(split=split, out=out, problems_path=problems, backend=be, runs=runs,
                                   progress=typer.echo, workers=nw, steps=step, problems=loaded)
    except SandboxUnavailable as e:
        typer.echo(f"targets build: sandbox unavailable: {e}", err=True)
        raise typer.Exit(2)
    except (HarnessError, ValueError, OSError) as e:
        typer.echo(f"targets build: {e}", err=True)
        raise typer.Exit(2)
    finally:
        if be is not None:
            be.close()
    typer.echo(rep.summary())
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(rep.to_dict(), indent=2) + "\n", encoding="utf-8")
    if not rep.ok:
        typer.echo(f"targets build: {len(rep.steps_missing)} step(s) have no targets "
                   f"(gold code failed or a test case is unsupported); the others are written, and "
                   f"`scicode_eval --allow-missing-targets` scores those steps as no_target", err=True)
        raise typer.Exit(1)


@app.command("check")
def check_cmd(
    path: Annotated[Path, typer.Argument(help="regenerated targets (h5)")],
    against: Annotated[Path, typer.Option("--against", help="official test_data.h5 to compare with")],
    rtol: Annotated[float, typer.Option(help="relative tolerance (np.allclose)")] = 1e-5,
    atol: Annotated[float, typer.Option(help="absolute tolerance (np.allclose)")] = 1e-8,
    only_ours: Annotated[bool, typer.Option("--only-ours", help="compare only the steps in PATH "
                                            "(do not report the official file's other steps as missing)")] = False,
):
    """Compare regenerated targets with an official file, per step and test."""
    from harness.data.h5targets import list_steps
    from harness.targets.check import check

    for p in (path, against):
        if not p.is_file():
            typer.echo(f"targets check: no such file: {p}", err=True)
            raise typer.Exit(2)
    steps = list(list_steps(path)) if only_ours else None
    rep = check(path, against, steps=steps, rtol=rtol, atol=atol)
    typer.echo(rep.summary())
    if not rep.ok:
        raise typer.Exit(1)
