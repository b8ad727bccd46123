"""`scicode-harness serve-reference`: the built-in OpenAI-compatible reference endpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def serve_reference(
    host: Annotated[str, typer.Option(help="address to bind (keep 127.0.0.1 unless you mean to expose it)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0 picks a free one)")] = 8011,
    mode: Annotated[str, typer.Option(help="gold | wrong (perturbed return values) | exit (calls exit/SystemExit/os._exit) | sleep")] = "gold",
    split: Annotated[str, typer.Option(help="problem split whose gold code answers (dev ships gold code)")] = "dev",
    problems: Annotated[Optional[Path], typer.Option(help="answer from user problems (SciCode JSONL with gold code) instead")] = None,
    verbose: Annotated[bool, typer.Option(help="log every request")] = False,
):
    """Serve an OpenAI-compatible chat endpoint that answers SciCode prompts with gold code."""
    from harness.reference import MODES, make_server

    if mode not in MODES:
        typer.echo(f"serve-reference: unknown mode {mode!r}; expected one of {', '.join(MODES)}", err=True)
        raise typer.Exit(2)
    try:
        server = make_server(host, port, mode=mode, split=split, problems_path=problems, quiet=not verbose)
    except Exception as e:  # dataset missing, port taken, ...
        typer.echo(f"serve-reference: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(f"reference endpoint ({mode}, {len(server.index)} steps) at {server.url} -- Ctrl-C to stop",
               err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
