"""The run's end: score the records, write records.jsonl, the results JSON and JUnit, print the
summary, and choose the exit code."""
from __future__ import annotations

import sys
from typing import Any, Optional

from harness.data import dataset
from harness.run import compare, envs, grade, page, report, score, usage
from harness.util import faultpoint

EXIT_FAIL_UNDER = 3   # a score is below --fail-under
EXIT_GEN_ERRORS = 4   # more steps than --max-gen-errors got no answer from the endpoint


def finish(run_: Any, seconds: float) -> int:
    """`run_` is the pipeline's Run: its records, problems, config, backends and step usage."""
    config, out = run_.config, run_.config.output
    for r in run_.records:   # each step's usage, from its generation (stored, so resumed too)
        u = run_.usage.get((r["sample"], r["step_id"]))
        if u:
            r["usage"] = u
    verdicts = {(r["sample"], r["step_id"]): r["status"] for r in run_.records}
    sc = score.score(run_.problems, verdicts, config.n_samples)
    records = sorted(run_.records, key=lambda r: (r["sample"], dataset.step_key(r["step_id"])))
    run_.out.mkdir(parents=True, exist_ok=True)
    faultpoint.point("report")
    report.write_records(run_.out / "records.jsonl", records)
    path = report.results_path(run_.out, config.model, config.with_background)
    tokens = usage.summarize(records, out.price_in, out.price_out)
    results = report.write_results(path, sc, meta(run_, seconds, records), tokens, out.pass_k)
    page.write_run(page.path_for(path), results, records, run_.out)
    if out.junit_xml:
        report.write_junit(out.junit_xml, records)
    print(report.summary(sc, path, tokens, out.pass_k))
    print(f"report page: {page.path_for(path)}")
    if run_.backend.name == "process":
        print(f"scicode_eval: {envs.TARGETS_READABLE}; recorded as sandbox_isolation.targets_readable "
              "in the results JSON", file=sys.stderr)
    overflowed = [r for r in records if r["status"] == "context_overflow"]
    if overflowed:   # the model's failure, scored; said aloud in case max_tokens alone fills the window
        print(f"scicode_eval: {len(overflowed)} step(s) exceeded the model's context (context_overflow, "
              f"scored as failed); first: {overflowed[0].get('error')}", file=sys.stderr)
    return exit_code(sc, records, out, path)


def meta(run_: Any, seconds: float, records: list[dict]) -> dict:
    config = run_.config
    return {"model": config.model, "split": run_.split, "benchmark": config.benchmark,
            "data": run_.data_meta(), "problem_ids": list(config.problem_ids) or None,
            "with_background": config.with_background,
            "n_samples": config.n_samples, "limit_samples": config.limit_samples,
            "sandbox": run_.backend.name, "sandbox_runtime": run_.backend.runtime,
            "sandbox_isolation": envs.isolation(run_.backend),
            "image": run_.backend.image, "prefill": config.prompting.prefill,
            "test_data": str(run_.test_data), "test_data_sha256": run_.test_data_id, "seconds": round(seconds, 1),
            "sampling": run_.sampling, "max_context_tokens": config.generation.max_context_tokens,
            "grading": grading_meta(run_),
            "sandbox_envs": envs.summary(config.sandbox.envs, config.sandbox.full_envs, run_.backends,
                                         records)}


def exit_code(sc: score.Scores, records: list[dict], out: Any, results_path: Any = None) -> int:
    gen_errors = sc.counts.get("gen_error", 0)
    if gen_errors > out.max_gen_errors:   # the scores above are written, but not trustworthy
        first = next((r.get("error") for r in records if r["status"] == "gen_error"), "")
        print(f"scicode_eval: {gen_errors} step(s) without a model answer after retries "
              f"(more than --max-gen-errors {out.max_gen_errors}); first: {first}", file=sys.stderr)
        return EXIT_GEN_ERRORS
    worse = baseline_worse(out, results_path) if out.baseline else False
    if worse is None:
        return 2
    floors = out.fail_under   # parsed by the command line (cli.evaluate.parse_fail_under)
    below = [k for k, v in floors.items() if (sc.steps if k == "steps" else sc.problems) < v]
    if below:
        print(f"scicode_eval: below --fail-under for {', '.join(below)}")
        return EXIT_FAIL_UNDER
    if worse:
        print(f"scicode_eval: significantly worse than --baseline {out.baseline}")
        return EXIT_FAIL_UNDER
    return 0


def baseline_worse(out: Any, results_path: Any) -> Optional[bool]:
    """--baseline: compare this run with it (printed); None when they cannot be compared."""
    try:
        result, _, _ = compare.against(out.baseline, results_path, out.alpha)
    except compare.CompareError as e:
        print(f"scicode_eval: error: --baseline: {e}", file=sys.stderr)
        return None
    print(f"--baseline comparison:\n{compare.summary(result)}")
    return result["verdict"] == "worse"


def grading_meta(run_: Any) -> dict:
    if run_.grading != "strict":
        return {"mode": "inprocess", "unsafe": True,
                "note": "verdicts decided inside the candidate's process; model code can forge them"}
    return {"mode": "strict", "version": grade.GRADING_VERSION,
            "verifier_versions": run_.verifier.versions if run_.verifier else {},
            "verifier_restarts": run_.verifier.restarts if run_.verifier else 0,
            "tests": grade.counts(run_.splits)}
