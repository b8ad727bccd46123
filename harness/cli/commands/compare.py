"""`scicode-harness compare` (two runs, paired) and `scicode-harness report` (a run's page again)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_WORSE = 3


def compare(
    baseline: Annotated[Path, typer.Argument(help="the baseline run: output directory or results JSON")],
    candidate: Annotated[Path, typer.Argument(help="the candidate run: output directory or results JSON")],
    alpha: Annotated[float, typer.Option(min=1e-9, max=0.5, help="significance level")] = 0.05,
    fail_if_worse: Annotated[bool, typer.Option("--fail-if-worse", help="exit 3 when the candidate is significantly worse")] = False,
    html: Annotated[Optional[Path], typer.Option(help="write the comparison page here")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the comparison as JSON here")] = None,
):
    """Pair two runs of the same steps: flips, exact McNemar, paired bootstrap interval, verdict."""
    import json

    from harness.run import compare as C, page

    try:
        result, base, cand = C.against(baseline, candidate, alpha)
    except C.CompareError as e:
        typer.echo(f"scicode-harness compare: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(C.summary(result))
    if html:
        typer.echo(f"page: {page.write_compare(html, result, base, cand)}")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    if fail_if_worse and result["verdict"] == "worse":
        raise typer.Exit(EXIT_WORSE)


def report(
    run: Annotated[Path, typer.Argument(help="a run's output directory or results JSON")],
    html: Annotated[Optional[Path], typer.Option(help="where to write the page (default: next to the results JSON)")] = None,
):
    """Render a run's report page again from its results JSON and records."""
    from harness.run import compare as C, page

    try:
        files = C.load(run)
    except C.CompareError as e:
        typer.echo(f"scicode-harness report: {e}", err=True)
        raise typer.Exit(2)
    out = page.write_run(html or page.path_for(files.results_path), files.results, files.records, files.out)
    typer.echo(f"page: {out}")
