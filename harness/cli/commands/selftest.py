"""`scicode-harness selftest` (behind `make run`): the whole harness on the dev split,
answered by the built-in reference endpoint, through `nemo-evaluator run_eval`."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
import yaml


_SHOWN = ("[scicode_eval", "steps_pass@1 ", "problems_pass@1 ", "counts ", "nvidia-26.3", "tokens ",
          "scicode_eval:")


def _fail(msg: str) -> None:
    typer.echo(f"selftest: {msg}", err=True)
    raise typer.Exit(1)


def selftest(
    output_dir: Path = typer.Option(Path("selftest_results"), help="where nemo-evaluator writes the run"),
    sandbox: str = typer.Option("docker", help="docker | process"),
    sandbox_runtime: str = typer.Option("runc", help="runc | runsc (gVisor), for the docker sandbox"),
    task: str = typer.Option("scicode_background", help="nemo-evaluator task to run"),
    parallelism: int = typer.Option(4, help="requests in flight"),
    targets: Optional[Path] = typer.Option(None, help="dev targets (default: build them if missing)"),
):
    """Run the dev split (50 steps, 15 problems) with gold answers; expect 1.0 / 1.0."""
    from harness.data import dataset
    from harness.util.paths import targets_path
    from harness.reference import make_server

    try:
        dataset.data_dir()
    except dataset.DataError:
        typer.echo("selftest: pulling the SciCode dataset ...")
        dataset.pull()
    tpath = targets or targets_path("dev")
    if not tpath.is_file():
        typer.echo(f"selftest: building dev targets from gold code into {tpath} ...")
        from harness.targets.build import build
        rep = build(split="dev", out=tpath, backend=sandbox, progress=typer.echo)
        typer.echo(rep.summary())
        if not rep.ok:
            tpath.unlink(missing_ok=True)
            _fail("the dev targets are incomplete (see above)")

    server = make_server("127.0.0.1", 0, mode="gold", split="dev")
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    ne = Path(sys.executable).with_name("nemo-evaluator")
    overrides = ",".join([
        "config.params.extra.split=dev", f"config.params.extra.test_data={tpath}",
        f"config.params.extra.sandbox={sandbox}", f"config.params.parallelism={parallelism}",
    ] + ([f"config.params.extra.sandbox_runtime={sandbox_runtime}"] if sandbox_runtime != "runc" else []))
    cmd = [str(ne), "run_eval", "--eval_type", task, "--model_id", "scicode-reference-gold",
           "--model_type", "chat", "--model_url", url, "--output_dir", str(output_dir),
           "--overrides", overrides]
    typer.echo("selftest: " + " ".join(cmd))
    env = dict(os.environ, PATH=f"{ne.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "selftest.log"
    typer.echo(f"selftest: full nemo-evaluator output in {log_path}")
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                log.write(line)
                if line.lstrip().startswith(_SHOWN):  # our progress and summary lines
                    typer.echo("  " + line.rstrip())
            proc.wait()
    finally:
        server.shutdown()
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        typer.echo("\n".join(tail), err=True)
        _fail(f"nemo-evaluator exited with {proc.returncode} (log: {log_path})")
    results = yaml.safe_load((output_dir / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
    steps = results["steps_pass@1"]["scores"]["steps_pass@1"]["value"]
    probs = results["problems_pass@1"]["scores"]["problems_pass@1"]["value"]
    typer.echo("")
    typer.echo("metric            value   expected")
    typer.echo(f"steps_pass@1      {steps:.4f}  1.0 (50/50 dev steps)")
    typer.echo(f"problems_pass@1   {probs:.4f}  1.0 (15/15 dev problems)")
    typer.echo(f"artifacts: {output_dir.resolve()} (results.yml, scicode_results/, records.jsonl)")
    typer.echo("Against a real endpoint:\n  export MY_API_KEY=...\n  .venv/bin/nemo-evaluator run_eval "
               "--eval_type scicode_background --model_id MODEL --model_type chat "
               "--model_url https://HOST/v1/chat/completions --api_key_name MY_API_KEY --output_dir results "
               "--overrides config.params.extra.test_data=/path/to/test_data.h5")
    if steps != 1.0 or probs != 1.0:
        _fail("the gold answers did not score 1.0 / 1.0")
