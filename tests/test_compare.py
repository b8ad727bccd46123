"""compare and the page on small synthetic runs written to disk (no Docker): pairing with several
samples, refusals that name every difference, partial and one-environment cells, the summary."""
import json

import pytest

from harness.run import compare as C
from harness.run import page, report, score

PROBLEMS = [{"problem_id": "1", "sub_steps": [{"step_number": "1.1", "test_cases": ["t"]},
                                               {"step_number": "1.2", "test_cases": ["t"]}]},
            {"problem_id": "2", "sub_steps": [{"step_number": "2.1", "test_cases": ["t"]}]}]


def write_run(out, statuses, n, **meta):
    """statuses: {(sample, step): status}; a run directory as scicode_eval leaves it."""
    records = [{"problem_id": sid.split(".")[0], "step_id": sid, "sample": s, "status": st,
                "error": None if st == "pass" else f"{st} in {sid}", "duration": 0.1}
               for (s, sid), st in sorted(statuses.items())]
    (out / "scicode_results").mkdir(parents=True)
    report.write_records(out / "records.jsonl", records)
    sc = score.score(PROBLEMS, statuses, n)
    run = {"model": "m", "split": "dev", "benchmark": "scicode", "grading": {"mode": "strict"},
           "test_data_sha256": "a" * 64, "n_samples": n, **meta}
    report.write_results(out / "scicode_results" / "m_without_background.json", sc, run)
    return out


def statuses(n, fail=()):
    return {(s, sid): ("fail" if (s, sid) in fail else "pass") for s in range(n) for sid in ("1.1", "1.2", "2.1")}


def test_samples_are_paired_and_flips_counted_each_way(tmp_path):
    a = write_run(tmp_path / "a", statuses(2, {(1, "2.1")}), 2)
    b = write_run(tmp_path / "b", statuses(3, {(0, "1.2"), (2, "1.1")}), 3)   # sample 2: unpaired
    result, _, _ = C.against(a, b)
    assert result["samples_paired"] == 2
    assert [(f["step_id"], f["sample"]) for f in result["flips"]["worse"]] == [("1.2", 0)]
    assert [(f["step_id"], f["sample"]) for f in result["flips"]["better"]] == [("2.1", 1)]
    assert result["steps"]["pairs"] == 6 and result["problems"]["pairs"] == 4
    assert (result["problems"]["worse"], result["problems"]["better"]) == (1, 1)
    assert result["baseline"]["steps_pass@1"] == pytest.approx(5 / 6) == result["candidate"]["steps_pass@1"]
    assert result["verdict"] == "no significant difference"
    text = C.summary(result)
    assert "1.2[0] pass->fail" in text and "2 samples paired" in text


def test_refusal_names_every_difference(tmp_path):
    a = write_run(tmp_path / "a", statuses(1), 1)
    b = write_run(tmp_path / "b", {k: v for k, v in statuses(1).items() if k[1] != "2.1"}, 1,
                  grading={"mode": "inprocess"}, test_data_sha256="b" * 64)
    path = b / "scicode_results" / "m_without_background.json"
    res = json.loads(path.read_text())
    res["per_problem"] = [p for p in res["per_problem"] if p["problem_id"] != "2"]
    path.write_text(json.dumps(res))
    with pytest.raises(C.CompareError) as e:
        C.against(a, path)   # a results JSON works as well as its directory
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("cannot compare: ")
    assert "grading mode differs (baseline strict, candidate inprocess)" in msg
    assert "test-data hash differs (baseline aaaaaaaaaaaa, candidate bbbbbbbbbbbb)" in msg
    assert "problem set differs (1 only in the baseline: 2, 0 only in the candidate)" in msg
    with pytest.raises(C.CompareError, match="not a scicode_eval output directory"):
        C.load(tmp_path)


def test_page_marks_partial_steps_and_one_environment_passes(tmp_path):
    run = write_run(tmp_path / "a", statuses(3, {(0, "1.1"), (1, "1.1"), (2, "1.1"), (1, "2.1")}), 3)
    files = C.load(run)
    files.results["run"]["sandbox_envs"] = {"passed_only_in": {"2024": [], "2025": ["1.2"]}}
    html = page.render_run(files.results, files.records, files.out)
    assert 'data-step="2.1" title="2.1: pass, fail, pass"' in html and "st-partial" in html and "2/3" in html
    assert 'class="cell st-pass env" data-step="1.2"' in html and "passed only in 2025" in html
    assert html.count('class="fail"') == 4 and 'id="s-1.1"' in html and "fail in 1.1" in html
    assert "steps_pass@3" in html   # pass@k rows with n samples


def test_summary_prints_intervals_and_pass_at_k():
    sc = score.score(PROBLEMS, statuses(3, {(0, "1.1"), (1, "2.1")}), 3)
    text = report.summary(sc, "r.json", ks=(1, 2))
    assert "95% CI [" in text.splitlines()[0]
    assert "problems_pass@1 0.6667  (4/6)  95% CI [" in text   # chains: 2 of 3 pass in each problem
    assert "pass@k          problems_pass@2 1.0000, steps_pass@2 1.0000" in text
