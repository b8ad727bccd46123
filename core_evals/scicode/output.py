"""Turn scicode-harness's results JSON into nemo-evaluator's EvaluationResult."""
import json
import pathlib

from nemo_evaluator.api.api_dataclasses import EvaluationResult

METRICS = ("steps_pass@1", "problems_pass@1")
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_prompt_tokens", "total_tokens")


def _find(output_dir: str) -> pathlib.Path:
    files = sorted((pathlib.Path(output_dir) / "scicode_results").glob("*.json"),
                   key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no scicode_results/*.json in {output_dir}")
    return files[-1]  # the newest run's results


def _tokens(block: dict) -> dict:
    """A usage block's reported token counts as scores (count: the steps that reported usage)."""
    return {"scores": {f: {"value": float(block[f]), "stats": {"count": block.get("steps")}}
                       for f in TOKEN_FIELDS if block.get(f) is not None}}


def usage_metrics(usage: dict) -> dict:
    """tokens, tokens_<status> (per step status) and cost, for the launcher's exporters."""
    out = {"tokens": _tokens(usage)}
    for status, block in sorted((usage.get("by_status") or {}).items()):
        out[f"tokens_{status}"] = _tokens(block)
    cost = usage.get("cost")
    if cost:
        out["cost"] = {"scores": {name: {"value": float(cost[key]), "stats": {}} for name, key in
                                  (("cost", "total"), ("cost_prompt", "prompt"), ("cost_completion", "completion"))}}
    return {k: v for k, v in out.items() if v["scores"]}


def extra_metrics(results: dict, n: int) -> dict:
    """pass@k for k other than 1 (steps_pass@k, problems_pass@k) and the 95% intervals of the
    pass@1 scores (<name>_ci95: lower, upper); the pass@1 metrics themselves stay as they were."""
    out = {}
    for name, value in (results.get("pass@k") or {}).items():
        if name != "k" and not name.endswith("@1") and value is not None:
            out[name] = {"scores": {name: {"value": float(value), "stats": {"count": n}}}}
    interval = results.get("interval") or {}
    for name in METRICS:
        lo_hi = interval.get(name)
        if lo_hi:
            out[f"{name}_ci95"] = {"scores": {"lower": {"value": float(lo_hi[0]), "stats": {}},
                                              "upper": {"value": float(lo_hi[1]), "stats": {}}}}
    return out


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
    metrics.update(extra_metrics(results, n))
    metrics.update(usage_metrics(results.get("usage") or {}))
    task = {"metrics": metrics}
    return EvaluationResult(tasks={"scicode": task}, groups={"scicode": task})
