"""Unit tests for prompts, assembly verdicts and scoring (no Docker, no network)."""
from harness.run import candidate, prompts, score
from harness.sandbox.boundary import from_obj
from harness.sandbox import Outcome

PROBLEM = {
    "problem_id": "900", "required_dependencies": "import numpy as np",
    "sub_steps": [
        {"step_number": "900.1", "step_description_prompt": "Add.", "step_background": "BG1",
         "function_header": "def add(a, b):\n    '''add'''", "return_line": "    return c",
         "test_cases": ["assert add(1, 2) == target"]},
        {"step_number": "900.2", "step_description_prompt": "Twice.", "step_background": "BG2",
         "function_header": "def twice(a):\n    '''twice'''", "return_line": "    return d",
         "test_cases": ["assert np.allclose(twice(2), target)", "assert twice(0) == target"]},
    ],
}
TEMPLATE = "STEPS:\n{problem_steps_str}\nNEXT STEP:\n{next_step_str}\nDEPS:\n{dependencies}\n"


def test_prompt_contains_chain_code_and_background():
    p = prompts.build_prompt(PROBLEM, 1, ["def add(a, b):\n    return a + b"], TEMPLATE, True)
    assert "Add.\nBG1" in p and "def add(a, b):\n    return a + b" in p
    assert "Twice.\nBG2" in p and "def twice(a):" in p and "return d" in p
    assert "------" not in p  # the last separator is dropped
    p0 = prompts.build_prompt(PROBLEM, 0, [], TEMPLATE, False)
    assert "BG1" not in p0 and p0.startswith("STEPS:\n\nNEXT STEP:\nAdd.")


def test_extract_code_rules():
    r = "text\n```python\nimport numpy as np\ndef f():\n    return 1\n```\nmore ```python\nx=2\n```"
    assert prompts.extract_code(r).strip() == "def f():\n    return 1"
    assert prompts.extract_code("```\ny = 3\n```").strip() == "y = 3"
    assert prompts.extract_code("z = 4").strip() == "z = 4"
    assert prompts.extract_code(None) == ""
    aa = r"(?<=```python\n)((?:\n|.)+?)(?=\n```)"
    assert prompts.extract_code(r, aa).strip() == "def f():\n    return 1"
    assert prompts.extract_code("no code", aa) == ""


def test_prefill_modes_keep_or_truncate_classes():
    text = "class A:\n    def __init__(self):\n        self.x = 1\n\nclass B(A):\n    pass\n"
    step = {"function_header": "class A:\n    def __init__(self):\n        '''init'''"}
    assert prompts.prefill(step, text, "verbatim") == text
    cut = prompts.prefill(step, text, "extract")   # upstream's bug A: only __init__ survives
    assert cut.startswith("def __init__") and "class B" not in cut


def _out(status="ok", report=None, stderr=""):
    return Outcome(status, 0 if status == "ok" else 1, 0.1, "", stderr, False, status == "timeout",
                   status == "oom", "process", None, from_obj(report))


def test_verdicts():
    ok = {"completed": True, "import_error": None, "tests": [{"status": "pass"}, {"status": "pass"}]}
    assert candidate.verdict(_out("ok", ok), 2)[0] == "pass"
    assert candidate.verdict(_out("ok", ok), 3)[0] == "error"         # a test not reported
    bad = {"completed": True, "import_error": None, "tests": [{"status": "pass"}, {"status": "fail"}]}
    assert candidate.verdict(_out("error", bad), 2)[0] == "fail"
    assert candidate.verdict(_out("error", {"completed": False, "import_error": "SystemExit: 0",
                                           "tests": []}), 2)[0] == "error"
    assert candidate.verdict(_out("ok", None), 2)[0] == "error"          # os._exit(0): no report
    assert candidate.verdict(_out("ok", {"completed": True, "tests": []}), 2)[0] == "error"
    assert candidate.verdict(_out("timeout"), 2)[0] == "timeout"
    assert candidate.verdict(_out("oom"), 2)[0] == "oom"
    # a step without tests (SciCode-Verified's 72.6): the program ran to its end, or not
    assert candidate.verdict(_out("ok", {"completed": True, "tests": []}), 0)[0] == "pass"
    assert candidate.verdict(_out("error", {"completed": True, "import_error": "NameError: x",
                                           "tests": []}), 0)[0] == "error"
    assert candidate.verdict(_out("ok", None), 0)[0] == "error"


def test_program_order():
    code = candidate.program("import numpy as np", ["def a(): pass"], "def b(): pass")
    assert code.index("import numpy") < code.index("def a") < code.index("def b")


SKIP_PROBLEM = {"problem_id": "13", "sub_steps": [     # 13.6 is never asked (no tests upstream)
    {"step_number": f"13.{i}", "test_cases": [] if i == 6 else ["t"]} for i in range(1, 8)]}
SCORED_13 = ["13.1", "13.2", "13.3", "13.4", "13.5", "13.7"]


def test_score_denominators_and_chains():
    probs = [PROBLEM, SKIP_PROBLEM]
    assert [score.scored_steps(p) for p in probs] == [["900.1", "900.2"], SCORED_13]
    perfect = {(s, sid): "pass" for s in range(2) for sid in ["900.1", "900.2"] + SCORED_13}
    sc = score.score(probs, perfect, 2)
    assert (sc.steps, sc.problems, sc.scored_steps) == (1.0, 1.0, 8)
    # NVIDIA 26.3 on a perfect model: the skipped 13.6 scores 0 and 13.7 is never looked at
    assert sc.nvidia["steps_pass@1"] == 7 / 8 and sc.nvidia["problems_pass@1"] == 0.5
    # sample 0 passes everything, sample 1 fails one step of 900: problems 0.5*(1)+0.5*(1/2)
    v = dict(perfect)
    v[(1, "900.2")] = "fail"
    sc = score.score(probs, v, 2)
    assert sc.problems == 0.75 and sc.steps == (1 + 7 / 8) / 2
    assert sc.counts["fail"] == 1 and sc.counts["pass"] == 15
    # a missing verdict is a generation error, counted as such
    sc = score.score(probs, {}, 1)
    assert sc.counts["gen_error"] == 8 and sc.steps == 0.0


def test_a_step_without_tests_is_scored_unless_never_asked():
    # SciCode-Verified's 72.6: its tests were removed, the step still counts
    p = {"problem_id": "72", "sub_steps": [{"step_number": "72.5", "test_cases": ["t"]},
                                           {"step_number": "72.6", "test_cases": []}]}
    assert score.scored_steps(p) == ["72.5", "72.6"]
    sc = score.score([p], {(0, "72.5"): "pass", (0, "72.6"): "error"}, 1)
    assert sc.scored_steps == 2 and sc.steps == 0.5 and sc.problems == 0.0


def test_upstream_scored_step_counts(dev_problems):
    from harness.data import dataset
    test = dataset.load_problems("test")
    assert sum(len(score.scored_steps(p)) for p in test) == 288
    assert sum(len(score.scored_steps(p)) for p in dev_problems) == 50
    # the only upstream steps without tests are the never-asked ones
    assert {s["step_number"] for p in test + dev_problems for s in p["sub_steps"]
            if not s.get("test_cases")} == set(dataset.SKIPPED_STEPS)


def test_junit_and_fail_under(tmp_path):
    import xml.etree.ElementTree as ET

    import pytest

    from harness.run import report
    from harness.cli.evaluate import parse_fail_under
    recs = [{"problem_id": "1", "step_id": "1.1", "sample": 0, "status": "pass", "duration": 0.5},
            {"problem_id": "1", "step_id": "1.2", "sample": 0, "status": "fail", "error": "AssertionError"},
            {"problem_id": "2", "step_id": "2.1", "sample": 0, "status": "timeout", "duration": 3}]
    report.write_junit(tmp_path / "j.xml", recs)
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert [tc.get("name") for tc in suite] == ["1.1[sample 0]", "1.2[sample 0]", "2.1[sample 0]"]
    assert parse_fail_under("steps=0.3,problems=0.1") == {"steps": 0.3, "problems": 0.1}
    assert parse_fail_under(None) == {}
    import argparse
    for bad in ("lines=3", "steps", "steps=abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fail_under(bad)


def test_counts_list_every_step_status_in_the_results_order():
    """The results JSON's `counts` keys, in this order (a reader may depend on it)."""
    sc = score.score([PROBLEM], {}, 1)
    assert list(sc.counts) == ["pass", "fail", "error", "timeout", "oom", "gen_error", "truncated",
                               "no_target", "infra", "context_overflow"]


def test_a_verdict_is_a_step_status_and_an_outcome_status_is_the_sandbox_s():
    from typing import get_args
    from harness.run.status import STEP_STATUSES
    from harness.sandbox import OUTCOME_STATUSES, OutcomeStatus
    assert OUTCOME_STATUSES == get_args(OutcomeStatus) == ("ok", "error", "timeout", "oom", "infra")
    # every sandbox status but ok is also a step status (a step that did not run its tests)
    assert set(OUTCOME_STATUSES) - {"ok"} <= set(STEP_STATUSES)
