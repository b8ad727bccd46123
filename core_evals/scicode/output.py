"""Turn scicode-harness's results JSON into nemo-evaluator's EvaluationResult."""
import json
import pathlib

from nemo_evaluator.api.api_dataclasses import EvaluationResult

METRICS = ("steps_pass@1", "problems_pass@1")


def _find(output_dir: str) -> pathlib.Path:
    files = sorted((pathlib.Path(output_dir) / "scicode_results").glob("*.json"),
                   key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no scicode_results/*.json in {output_dir}")
    return files[-1]  # the newest run's results


def parse_output(output_dir: str) -> EvaluationResult:
    results = json.loads(_find(output_dir).read_text())
    n = int(results.get("n_samples") or 1)
    metrics = {}
    for name in METRICS:
        stats = {"count": n}
        err = (results.get("stderr") or {}).get(name)
        if n > 1 and err is not None:
            stats["stderr"] = err
        metrics[name] = {"scores": {name: {"value": results[name], "stats": stats}}}
    task = {"metrics": metrics}
    return EvaluationResult(tasks={"scicode": task}, groups={"scicode": task})
