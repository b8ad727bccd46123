"""`scicode-harness image ...`: build and inspect the pinned sandbox image."""
from __future__ import annotations

import json

import typer

app = typer.Typer(help="Build and inspect the pinned sandbox image (scicode-sandbox).",
                  no_args_is_help=True, add_completion=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command("build")
def build_cmd(
    offline: bool = typer.Option(True, "--offline/--no-offline",
                                 help="Offline: debootstrap a local Debian base instead of pulling "
                                      "python:3.11-slim-bookworm from a registry."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an image for this lock exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print the image id."),
    env: str = typer.Option("2024", "--env",
                            help="Sandbox environment: 2024, 2025, or several comma-separated (all: every one)."),
):
    """Build (or reuse) the sandbox image of each environment's lock (sandbox_image/requirements*.lock)."""
    from harness.build import image
    envs = _envs(env)

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    for name in envs:
        try:
            image_id = image.build(offline=offline, force=force, progress=progress, env=name)
        except image.ImageError as e:
            _fail(f"[{name}] {e}" if len(envs) > 1 else str(e))
        except KeyboardInterrupt:
            _fail("interrupted")
        typer.echo(image_id)


def _envs(text: str) -> tuple:
    from harness.sandbox.envs import ENVS, EnvError, parse_envs
    try:
        return ENVS if text.strip() == "all" else parse_envs(text)
    except EnvError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)


@app.command("info")
def info_cmd(
    ref: str = typer.Option(None, "--image", help="Image reference (default: this lock's tag, "
                                                  "else scicode-sandbox:latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full description as JSON."),
    env: str = typer.Option("2024", "--env", help="Sandbox environment: 2024 or 2025."),
):
    """Show the image's id, labels and installed package versions."""
    from harness.build import image

    (name,) = _envs(env)[:1]
    try:
        data = image.info(ref, env=name)
    except image.ImageError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    size = data.get("size_bytes") or 0
    rows = [
        ("image", data["ref"]),
        ("environment", data["env"]),
        ("id", data["id"]),
        ("tags", ", ".join(data["tags"]) or "-"),
        ("size", f"{size / 1e6:.0f} MB"),
        ("created", data.get("created") or "-"),
        ("user", f"{data.get('user') or '-'} (runs as uid {data.get('uid')})"),
        ("python", data.get("python") or "-"),
        ("lock digest", (data.get("lock_digest") or "missing")
         + ("" if data["lock_matches"] else f"  (DIFFERS from the {data['env']} lock)")),
        ("harness version", data.get("version") or "-"),
        ("base", data.get("base") or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k:<{width}}  {v}")
    typer.echo("packages:")
    for name, version in data["packages"].items():
        flag = "  (lock: %s)" % data["lock_mismatches"][name]["lock"] if name in data["lock_mismatches"] else ""
        typer.echo(f"  {name:<18} {version}{flag}")
    missing = [n for n, m in data["lock_mismatches"].items() if m["image"] is None]
    for name in missing:
        typer.echo(f"  {name:<18} MISSING (lock: {data['lock_mismatches'][name]['lock']})")
