"""Run outputs: results JSON (NVIDIA-compatible keys plus ours), JUnit XML, summary."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

from harness.sandbox import boundary
from harness.util.paths import write_text_atomic
from harness.run import stats, usage
from harness.run.score import Scores, stderr


def model_short(model: str) -> str:
    return Path(model).parts[-1] if model else "model"


def results_path(output_dir: Path, model: str, with_background: bool) -> Path:
    bg = "with_background" if with_background else "without_background"
    return Path(output_dir) / "scicode_results" / f"{model_short(model)}_{bg}.json"


def write_results(path: Path, sc: Scores, meta: dict, tokens: Optional[dict] = None,
                  ks: tuple[int, ...] = ()) -> dict:
    ks_ = stats.default_ks(sc.n_samples, ks)
    data = {
        # NVIDIA-compatible keys
        "steps_pass@1": sc.steps,
        "problems_pass@1": sc.problems,
        "n_samples": sc.n_samples,
        "num_correct": sc.num_correct,
        # ours
        "scored_steps": sc.scored_steps,
        "problems": sc.n_problems,
        "per_sample": {"steps_pass@1": sc.per_sample_steps, "problems_pass@1": sc.per_sample_problems},
        "stderr": {"steps_pass@1": stderr(sc.per_sample_steps),
                   "problems_pass@1": stderr(sc.per_sample_problems)},
        "interval": stats.bootstrap_interval(sc.per_problem, sc.n_samples),   # over problems
        "pass@k": {"k": ks_, **stats.pass_at_k_table(sc.per_problem, sc.n_samples, ks_)},
        "counts": sc.counts,
        "per_problem": sc.per_problem,
        "nvidia_26_3_equivalent": sc.nvidia,
        "usage": tokens,   # run.usage.summarize: totals, by_status, cost
        "run": meta,
    }
    write_text_atomic(path, json.dumps(data, indent=2))
    return data


def write_records(path: Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_junit(path: Path, records: list[dict], name: str = "scicode") -> None:
    suite = ET.Element("testsuite", name=name, tests=str(len(records)))
    failures = errors = 0
    for r in records:
        tc = ET.SubElement(suite, "testcase", classname=f"scicode.{r['problem_id']}",
                           name=f"{r['step_id']}[sample {r['sample']}]", time=f"{r.get('duration') or 0:.3f}")
        st = r["status"]
        if st == "pass":
            continue
        msg = boundary.text(f"{st}: {r.get('error') or ''}", 2000)   # XML holds no control characters
        tail = boundary.tail(r.get("stderr_tail") or "")
        if st == "fail":
            failures += 1
            ET.SubElement(tc, "failure", message=msg, type=st).text = tail
        else:
            errors += 1
            ET.SubElement(tc, "error", message=msg, type=st).text = tail
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _ci(iv: dict, name: str) -> str:
    lo_hi = iv.get(name)
    return f"  95% CI [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else ""


def _pass_k_line(sc: Scores, ks: tuple[int, ...]) -> str:
    table = stats.pass_at_k_table(sc.per_problem, sc.n_samples, stats.default_ks(sc.n_samples, ks))
    return "pass@k          " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(table.items()) if not k.endswith("@1"))


def summary(sc: Scores, result_file: Path, tokens: Optional[dict] = None, ks: tuple[int, ...] = ()) -> str:
    ok_steps = round(sc.steps * sc.scored_steps * sc.n_samples)
    ok_probs = round(sc.problems * sc.n_problems * sc.n_samples)
    per = "" if sc.n_samples == 1 else f" (totals over {sc.n_samples} samples)"
    iv = stats.bootstrap_interval(sc.per_problem, sc.n_samples)
    lines = [
        f"steps_pass@1    {sc.steps:.4f}  ({ok_steps}/{sc.scored_steps * sc.n_samples}){per}{_ci(iv, 'steps_pass@1')}",
        f"problems_pass@1 {sc.problems:.4f}  ({ok_probs}/{sc.n_problems * sc.n_samples}){_ci(iv, 'problems_pass@1')}",
        *([_pass_k_line(sc, ks)] if sc.n_samples > 1 and stats.default_ks(sc.n_samples, ks) != [1] else []),
        "counts          " + ", ".join(f"{k} {v}" for k, v in sc.counts.items()),
        f"nvidia-26.3 equivalent: steps {sc.nvidia['steps_pass@1']:.4f}, problems {sc.nvidia['problems_pass@1']:.4f}",
        *([usage.summary_line(tokens)] if tokens else []),
        f"results: {result_file}",
    ]
    return "\n".join(lines)
