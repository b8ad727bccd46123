"""The report page: one self-contained HTML file (inline CSS; no script, font or network) rendered
with jinja2 from the results JSON and the records. Generated code and error text are hostile
input: autoescape is on, and each failed step's text is cut to a share of a size budget."""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Optional

from markupsafe import escape

from harness.data.dataset import step_key
from harness.run.report import model_short
from harness.run.status import STEP_STATUSES
from harness.util.paths import write_text_atomic

TEMPLATES = Path(__file__).with_name("templates")
BUDGET = 3_000_000            # escaped characters of code and error text over all failed steps
ITEM_MIN, ITEM_MAX = 600, 12_000
LEGEND = ("pass", "partial", *(s for s in STEP_STATUSES if s != "pass"))   # partial: some samples pass


def _env():
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=4: "n/a" if v is None else f"{v:.{d}f}"
    return env


def clip(text: Optional[str], cap: int, tail: bool = False) -> str:
    """At most `cap` characters once HTML-escaped: the head of code, the tail of an error."""
    text = text or ""
    keep = len(text)
    while keep > 0:
        part = text[-keep:] if tail else text[:keep]
        size = len(escape(part)) + (0 if keep == len(text) else 40)
        if size <= cap:
            break
        keep = min(keep - 1, int(keep * cap / size))
    if keep >= len(text):
        return text
    note = f"[... {len(text) - keep} characters cut ...]"
    return f"{note}\n{text[-keep:]}" if tail and keep else (f"{text[:keep]}\n{note}" if keep else note)


def path_for(results_path: Path) -> Path:
    return Path(results_path).with_suffix(".html")


class Artifacts:
    """Where a run's code and prompts are: OUT/generated_code|prompt/<model>/<bg>/<step>_<sample>."""

    def __init__(self, out: Path, meta: dict):
        bg = "with_background" if meta.get("with_background") else "without_background"
        self.code = Path(out) / "generated_code" / model_short(meta.get("model") or "") / bg
        self.prompt = Path(out) / "prompt" / model_short(meta.get("model") or "") / bg

    @staticmethod
    def _read(path: Path) -> Optional[str]:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def code_of(self, step_id: str, sample: int) -> Optional[str]:
        return self._read(self.code / f"{step_id}_{sample}.py")

    def prompt_chars(self, step_id: str, sample: int) -> Optional[int]:
        text = self._read(self.prompt / f"{step_id}_{sample}.txt")
        return None if text is None else len(text)


def _cell(step_id: str, recs: list[dict], only: dict[str, str], flip: Optional[str] = None) -> dict:
    statuses = [r["status"] for r in recs] or ["gen_error"]
    passed = statuses.count("pass")
    if passed == len(statuses):
        status = "pass"
    elif passed:
        status = "partial"
    else:
        status = Counter(statuses).most_common(1)[0][0]
    label = step_id.rsplit(".", 1)[-1] + (f" {passed}/{len(statuses)}" if len(statuses) > 1 else "")
    title = f"{step_id}: " + ", ".join(statuses) + (f"; passed only in {only[step_id]}" if step_id in only else "")
    return {"step_id": step_id, "status": status, "label": label, "title": title, "env": only.get(step_id),
            "flip": flip, "link": status != "pass" or flip is not None}


def grid(per_problem: list[dict], records: list[dict], only_in: dict, flips: Optional[dict] = None) -> list[dict]:
    """One row per problem, one cell per scored step (its status over the samples)."""
    by_step: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["sample"]):
        by_step.setdefault(r["step_id"], []).append(r)
    only = {sid: env for env, sids in (only_in or {}).items() for sid in sids}
    rows = []
    for p in sorted(per_problem, key=lambda p: step_key(str(p["problem_id"]))):
        sids = sorted(p["step_passes"], key=step_key)
        rows.append({"problem_id": p["problem_id"],
                     "cells": [_cell(s, by_step.get(s, []), only, (flips or {}).get(s)) for s in sids]})
    return rows


def failures(records: list[dict], files: Optional[Artifacts], budget: int = BUDGET) -> list[dict]:
    """Each failed (sample, step): status, the first failing test, error tails and code, cut so
    that all of them together stay near `budget`."""
    failed = sorted((r for r in records if r["status"] != "pass"),
                    key=lambda r: (step_key(r["step_id"]), r["sample"]))
    share = max(ITEM_MIN, min(ITEM_MAX, budget // max(len(failed), 1)))
    out, anchored = [], set()
    for r in failed:
        tests = r.get("tests") or []
        bad = next(((i, t) for i, t in enumerate(tests) if t.get("status") != "pass"), None)
        code = files.code_of(r["step_id"], r["sample"]) if files else None
        usage = r.get("usage") or {}
        out.append({
            "anchor": None if r["step_id"] in anchored else f"s-{r['step_id']}",
            "step_id": r["step_id"], "problem_id": r.get("problem_id"), "sample": r["sample"],
            "status": r["status"], "env": r.get("env"), "duration": r.get("duration"),
            "test": None if bad is None else f"test {bad[0] + 1} of {len(tests)}: {bad[1].get('status')}",
            "test_error": clip(bad[1].get("error") if bad else None, share // 6, tail=True),
            "error": clip(r.get("error"), share // 6, tail=True),
            "stderr": clip(r.get("stderr_tail"), share // 6, tail=True),
            "code": None if code is None else clip(code, share // 2), "code_chars": len(code or ""),
            "prompt_chars": files.prompt_chars(r["step_id"], r["sample"]) if files else None,
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")})
        anchored.add(r["step_id"])
    return out


def timings(results: dict, records: list[dict]) -> dict:
    durations = sorted(((r.get("duration") or 0.0, r["step_id"], r["sample"]) for r in records), reverse=True)
    values = [d for d, _, _ in durations]
    return {"seconds": (results.get("run") or {}).get("seconds"),
            "sandbox_seconds": sum(values), "grade_seconds": sum(r.get("grade_seconds") or 0.0 for r in records),
            "median": statistics.median(values) if values else None, "slowest": durations[:10]}


def headline(results: dict) -> dict:
    n = results.get("n_samples") or 1
    scored, probs = results.get("scored_steps") or 0, results.get("problems") or 0
    iv, err = results.get("interval") or {}, results.get("stderr") or {}
    rows = []
    for name, total in (("steps_pass@1", scored * n), ("problems_pass@1", probs * n)):
        value = results.get(name) or 0.0
        rows.append({"name": name, "value": value, "ok": round(value * total), "total": total,
                     "interval": iv.get(name), "stderr": err.get(name)})
    pass_k = {k: v for k, v in (results.get("pass@k") or {}).items() if k != "k" and not k.endswith("@1")}
    counts = {k: v for k, v in (results.get("counts") or {}).items() if v}
    return {"rows": rows, "pass_k": pass_k, "counts": counts, "n": n, "level": iv.get("level", 0.95)}


def run_context(results: dict, records: list[dict], out: Optional[Path]) -> dict:
    meta = results.get("run") or {}
    envs = meta.get("sandbox_envs") or {}
    return {"meta": meta, "head": headline(results), "statuses": LEGEND,
            "grid": grid(results.get("per_problem") or [], records, envs.get("passed_only_in") or {}),
            "failures": failures(records, Artifacts(out, meta) if out else None),
            "timings": timings(results, records)}


def render_run(results: dict, records: list[dict], out: Optional[Path] = None) -> str:
    return _env().get_template("run.html.j2").render(**run_context(results, records, out))


def write_run(path: Path, results: dict, records: list[dict], out: Optional[Path] = None) -> Path:
    write_text_atomic(Path(path), render_run(results, records, out))
    return Path(path)


def render_compare(result: dict, base, cand) -> str:
    """`compare --html`: both headlines, the test, the candidate's grid with flips marked."""
    flips = {f["step_id"]: way for way in ("worse", "better") for f in result["flips"][way]}
    flipped = [dict(f, way=way) for way in ("worse", "better") for f in result["flips"][way]]
    keys = {(f["step_id"], f["sample"]) for f in flipped}
    files = Artifacts(cand.out, cand.meta)
    details = failures([r for r in cand.records if (r["step_id"], r["sample"]) in keys], files)
    envs = cand.meta.get("sandbox_envs") or {}
    return _env().get_template("compare.html.j2").render(
        result=result, base=headline(base.results), cand=headline(cand.results), statuses=LEGEND,
        grid=grid(cand.results.get("per_problem") or [], cand.records, envs.get("passed_only_in") or {}, flips),
        flipped=flipped, failures=details, base_meta=base.meta, cand_meta=cand.meta)


def write_compare(path: Path, result: dict, base, cand) -> Path:
    write_text_atomic(Path(path), render_compare(result, base, cand))
    return Path(path)
