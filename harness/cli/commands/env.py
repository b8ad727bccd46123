"""`scicode-harness env build`: the sandbox environments as venvs, for --sandbox bwrap and process."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Build the sandbox environments as venvs (for --sandbox bwrap and process).",
                  no_args_is_help=True, add_completion=False)


@app.command("build")
def build_cmd(
    env: str = typer.Option("2024", "--env", help="2024, 2025, comma-separated, or all."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the venv for this lock exists."),
    python: Optional[str] = typer.Option(None, "--python",
                                         help="Base interpreter (default: /usr/bin/python3 if 3.11)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print the venv paths."),
    wheelhouse: Optional[Path] = typer.Option(None, "--wheelhouse", exists=True, file_okay=False,
                                              help="Install from this directory of wheels (one --env)."),
):
    """Install each environment's hashed lock, offline from its wheelhouse, into
    <cache>/envs/<env>/<lock digest> (reused while the lock is unchanged)."""
    from harness.build import sandbox_env as venv
    from harness.cli.commands.image import _envs
    from harness.sandbox.image_lookup import ImageError

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    names = _envs(env)
    if wheelhouse is not None and len(names) != 1:
        raise typer.BadParameter("--wheelhouse goes with one --env", param_hint="--wheelhouse")
    for name in names:
        try:
            typer.echo(venv.build(name, force=force, python=python, progress=progress,
                                  wheelhouse=wheelhouse))
        except ImageError as e:
            typer.echo(f"error: [{name}] {e}", err=True)
            raise typer.Exit(1)


@app.command("path")
def path_cmd(env: str = typer.Option("2024", "--env", help="2024 or 2025.")):
    """Print the built venv of ENV, or exit 1 when it is not built."""
    from harness.sandbox.venvs import build_hint, find_env
    found = find_env(env)
    if found is None:
        typer.echo(f"not built: {build_hint(env)}", err=True)
        raise typer.Exit(1)
    typer.echo(found)
