"""Two runs of the same steps, paired: flips each way, exact McNemar on the discordant pairs
(steps and problem chains), the paired bootstrap interval of the difference, and a verdict.

A unit is a (sample, step) or a (sample, problem) both runs have: with n samples, samples
0..min(n_a, n_b)-1 are paired. Verdicts come from records.jsonl; the results JSON says what
was run (split, problems, grading, test data).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from harness.data.dataset import step_key
from harness.errors import UserError
from harness.run import stats

VERDICTS = ("better", "worse", "no significant difference")


class CompareError(UserError):
    """The two runs cannot be compared (different steps or data), or one cannot be read."""


@dataclass
class RunFiles:
    results: dict
    records: list[dict]
    results_path: Path
    out: Path

    @property
    def meta(self) -> dict:
        return self.results.get("run") or {}

    @property
    def label(self) -> str:
        return f"{self.meta.get('model') or '?'} ({self.out})"


def find_results(out: Path) -> Path:
    files = sorted((out / "scicode_results").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise CompareError(f"no scicode_results/*.json in {out}: not a scicode_eval output directory")
    return files[-1]   # the newest, as the results.yml parser picks


def load(path: Path) -> RunFiles:
    """An output directory, or a results JSON inside one (its records.jsonl two levels up)."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path} does not exist")
    results_path = find_results(path) if path.is_dir() else path
    out = path if path.is_dir() else path.parent.parent
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(x) for x in lines if x.strip()]
    except (OSError, ValueError) as e:
        raise CompareError(f"cannot read the run in {out}: {e}") from None
    return RunFiles(results, records, results_path, out)


def problem_set(run: RunFiles) -> set[str]:
    return {str(p["problem_id"]) for p in run.results.get("per_problem") or []}


def differences(a: RunFiles, b: RunFiles) -> list[str]:
    """What makes the two runs' numbers incomparable, each named (empty: comparable)."""
    ma, mb = a.meta, b.meta
    out = []
    for key, name in (("benchmark", "benchmark"), ("split", "split"), ("test_data_sha256", "test-data hash")):
        va, vb = ma.get(key), mb.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f"{name} differs (baseline {_short(va)}, candidate {_short(vb)})")
    ga, gb = (ma.get("grading") or {}).get("mode"), (mb.get("grading") or {}).get("mode")
    if ga != gb:
        out.append(f"grading mode differs (baseline {ga}, candidate {gb})")
    pa, pb = problem_set(a), problem_set(b)
    if pa != pb:
        only_a, only_b = sorted(pa - pb, key=step_key), sorted(pb - pa, key=step_key)
        out.append(f"problem set differs ({len(only_a)} only in the baseline{_few(only_a)}, "
                   f"{len(only_b)} only in the candidate{_few(only_b)})")
    return out


def _short(v) -> str:
    s = str(v)
    return s[:12] if len(s) == 64 else s


def _few(ids: list[str]) -> str:
    return f": {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}" if ids else ""


def check(a: RunFiles, b: RunFiles) -> None:
    diff = differences(a, b)
    if diff:
        raise CompareError("cannot compare: " + "; ".join(diff))


def _verdicts(run: RunFiles, samples: int) -> dict[tuple[int, str], dict]:
    return {(r["sample"], r["step_id"]): r for r in run.records if r.get("sample", 0) < samples}


def _n(run: RunFiles) -> int:
    return int(run.results.get("n_samples") or run.meta.get("n_samples") or 1)


def compare(a: RunFiles, b: RunFiles, alpha: float = 0.05) -> dict:
    """Baseline `a` against candidate `b` (check() first)."""
    m = min(_n(a), _n(b))
    va, vb = _verdicts(a, m), _verdicts(b, m)
    steps_of: dict[str, set[str]] = {}
    for r in [*va.values(), *vb.values()]:
        steps_of.setdefault(str(r["problem_id"]), set()).add(r["step_id"])
    problems = sorted(steps_of, key=step_key)
    ok = {run: {k: r["status"] == "pass" for k, r in v.items()} for run, v in (("a", va), ("b", vb))}
    flips: dict[str, list] = {"worse": [], "better": []}
    arrays = {side: {"passes": [], "steps": [], "chains": []} for side in "ab"}
    chain_flips = {"worse": 0, "better": 0}
    for pid in problems:
        sids = sorted(steps_of[pid], key=step_key)
        for side in "ab":
            passed = [[ok[side].get((s, sid), False) for sid in sids] for s in range(m)]
            arrays[side]["passes"].append(sum(map(sum, passed)))
            arrays[side]["steps"].append(len(sids) * m)
            arrays[side]["chains"].append(sum(all(x) for x in passed) / m)
        for s in range(m):
            pa = all(ok["a"].get((s, sid), False) for sid in sids)
            pb = all(ok["b"].get((s, sid), False) for sid in sids)
            if pa != pb:
                chain_flips["worse" if pa else "better"] += 1
            for sid in sids:
                fa, fb = ok["a"].get((s, sid), False), ok["b"].get((s, sid), False)
                if fa != fb:
                    flips["worse" if fa else "better"].append(_flip(pid, sid, s, va, vb))
    arr = {side: {k: np.array(v, dtype=float) for k, v in d.items()} for side, d in arrays.items()}
    interval = stats.paired_difference_interval(arr["a"], arr["b"])
    n_steps, n_probs = sum(arrays["a"]["steps"]), len(problems) * m
    result = {"alpha": alpha, "samples_paired": m,
              "baseline": _side(a, arr["a"], m), "candidate": _side(b, arr["b"], m),
              "steps": _test(len(flips["worse"]), len(flips["better"]), n_steps,
                             interval["steps_pass@1"]),
              "problems": _test(chain_flips["worse"], chain_flips["better"], n_probs,
                                interval["problems_pass@1"]),
              "flips": flips}
    result["verdict"] = verdict(result, alpha)
    return result


def _flip(pid: str, sid: str, sample: int, va: dict, vb: dict) -> dict:
    ra, rb = va.get((sample, sid)) or {}, vb.get((sample, sid)) or {}
    return {"problem_id": pid, "step_id": sid, "sample": sample,
            "baseline": ra.get("status", "missing"), "candidate": rb.get("status", "missing"),
            "error": (rb.get("error") or ra.get("error") or "")[:300]}


def _side(run: RunFiles, arr: dict, m: int) -> dict:
    """The run's scores on the paired units (its first m samples)."""
    passes, steps, chains = float(arr["passes"].sum()), float(arr["steps"].sum()), arr["chains"]
    return {"path": str(run.out), "results": str(run.results_path), "model": run.meta.get("model"),
            "n_samples": _n(run), "steps_pass@1": passes / steps if steps else 0.0,
            "problems_pass@1": float(chains.mean()) if len(chains) else 0.0,
            "steps_passed": int(passes), "problems_passed": int(round(chains.sum() * m))}


def _test(worse: int, better: int, pairs: int, interval: list[float]) -> dict:
    return {"pairs": pairs, "worse": worse, "better": better, "difference": (better - worse) / pairs if pairs else 0.0,
            "interval": interval, "p_value": stats.mcnemar(worse, better)}


def verdict(result: dict, alpha: float) -> str:
    """worse when steps or problems got significantly worse (the gate errs on the safe side),
    better when one got significantly better and neither worse."""
    tests = [result["steps"], result["problems"]]
    if any(t["p_value"] < alpha and t["worse"] > t["better"] for t in tests):
        return "worse"
    if any(t["p_value"] < alpha and t["better"] > t["worse"] for t in tests):
        return "better"
    return "no significant difference"


def summary(result: dict, max_flips: int = 20) -> str:
    lines = []
    for side in ("baseline", "candidate"):
        s = result[side]
        lines.append(f"{side:<10}{s['model']}: steps {s['steps_pass@1']:.4f}, problems {s['problems_pass@1']:.4f} "
                     f"(n={s['n_samples']}; {s['path']})")
    for name in ("steps", "problems"):
        t = result[name]
        lo, hi = t["interval"]
        lines.append(f"{name:<10}{t['difference']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}); flips {t['worse']} "
                     f"worse, {t['better']} better of {t['pairs']}; exact McNemar p={t['p_value']:.4g}")
    for way in ("worse", "better"):
        fl = result["flips"][way]
        if fl:
            shown = ", ".join(f"{f['step_id']}[{f['sample']}] {f['baseline']}->{f['candidate']}" for f in fl[:max_flips])
            more = f" (+{len(fl) - max_flips} more)" if len(fl) > max_flips else ""
            lines.append(f"{way} ({len(fl)}): {shown}{more}")
    paired = "" if result["samples_paired"] == 1 else f", {result['samples_paired']} samples paired"
    lines.append(f"verdict: {result['verdict']} (alpha {result['alpha']}{paired})")
    return "\n".join(lines)


def against(baseline: Path, candidate: Path, alpha: float = 0.05) -> tuple[dict, RunFiles, RunFiles]:
    a, b = load(baseline), load(candidate)
    check(a, b)
    return compare(a, b, alpha), a, b


def early_check(baseline: Path, meta: dict, problems: Optional[set[str]] = None) -> None:
    """Before a run with --baseline: refuse at once what the end would refuse."""
    a = load(baseline)
    b = RunFiles({"run": meta, "per_problem": [{"problem_id": p} for p in (problems or problem_set(a))]},
                 [], Path(), Path())
    check(a, b)
