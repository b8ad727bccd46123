"""pass@k against hand-computed cases, the bootstrap interval's coverage on simulated benchmarks,
the exact McNemar test, the new results.yml metrics and flags; and the report page of a large
synthetic run (size, escaping, nothing external)."""
import json

import numpy as np
import pytest

from harness.run import page, stats


@pytest.mark.parametrize("n, c, k, want", [
    (1, 0, 1, 0.0), (1, 1, 1, 1.0),            # one sample: the verdict
    (5, 0, 1, 0.0), (5, 0, 5, 0.0),            # c = 0: never
    (5, 5, 1, 1.0), (5, 5, 3, 1.0),            # c = n: always
    (5, 2, 1, 0.4),                            # k = 1: c / n
    (5, 2, 5, 1.0),                            # k = n, c > 0: some sample of all n passed
    (5, 2, 2, 1 - 3 / 10),                     # 1 - C(3,2)/C(5,2)
    (3, 1, 2, 1 - 1 / 3),                      # 1 - C(2,2)/C(3,2)
    (10, 3, 4, 1 - 35 / 210),                  # 1 - C(7,4)/C(10,4)
])
def test_pass_at_k_hand_computed(n, c, k, want):
    assert stats.pass_at_k(n, c, k) == pytest.approx(want)


def test_pass_at_k_rejects_impossible_inputs():
    for n, c, k in ((3, 4, 1), (3, 1, 4), (3, 1, 0)):
        with pytest.raises(ValueError):
            stats.pass_at_k(n, c, k)


def test_pass_at_k_table_averages_steps_and_chains():
    per = [{"problem_id": "1", "steps": 2, "step_passes": {"1.1": 3, "1.2": 0}, "problem_passes": 0},
           {"problem_id": "2", "steps": 1, "step_passes": {"2.1": 1}, "problem_passes": 1}]
    t = stats.pass_at_k_table(per, 3, stats.default_ks(3))
    assert stats.default_ks(3) == [1, 3] and stats.default_ks(3, [2]) == [2]
    assert t["steps_pass@1"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert t["steps_pass@3"] == pytest.approx((1 + 0 + 1) / 3)
    assert t["problems_pass@1"] == pytest.approx((0 + 1 / 3) / 2)
    assert t["problems_pass@3"] == pytest.approx(0.5)


def _simulated_run(rng, n, a=2.0, b=3.0, problems=65):
    """A benchmark like SciCode's test split: 65 problems of 2-7 steps (~290 steps); each problem
    has its own difficulty p ~ Beta(a, b) (steps of one problem are correlated through it)."""
    per = []
    for pid in range(problems):
        k, p = int(rng.integers(2, 8)), rng.beta(a, b)
        res = rng.random((n, k)) < p
        per.append({"problem_id": str(pid), "steps": k, "problem_passes": int(res.all(axis=1).sum()),
                    "step_passes": {f"{pid}.{i + 1}": int(res[:, i].sum()) for i in range(k)}})
    return per


def _true_rates(a=2.0, b=3.0):
    """steps: E[p]; problems: E[p^k] over k uniform on 2..7 (Beta moments)."""
    def moment(k):
        return float(np.prod([(a + i) / (a + b + i) for i in range(k)]))
    return a / (a + b), float(np.mean([moment(k) for k in range(2, 8)]))


@pytest.mark.parametrize("n", [1, 3])
def test_interval_covers_the_true_rate(n):
    """>= 93% of 200 simulated runs cover the true rate, for both scores (measured over 1000
    runs: n=1 steps 94.8%, problems 96.9%; n=3 steps 93.8%, problems 94.3%)."""
    rng = np.random.default_rng(0)
    true_steps, true_probs = _true_rates()
    cover = np.zeros(2)
    for _ in range(200):
        iv = stats.bootstrap_interval(_simulated_run(rng, n), n)
        assert iv["steps_pass@1"][0] <= iv["steps_pass@1"][1]
        cover += [iv["steps_pass@1"][0] <= true_steps <= iv["steps_pass@1"][1],
                  iv["problems_pass@1"][0] <= true_probs <= iv["problems_pass@1"][1]]
    print(f"n={n}: coverage steps {cover[0] / 2:.1f}%, problems {cover[1] / 2:.1f}%")
    assert cover[0] >= 186 and cover[1] >= 186, cover


def test_interval_is_fixed_by_its_seed_and_degenerate_runs_are_points():
    per = _simulated_run(np.random.default_rng(1), 1)
    assert stats.bootstrap_interval(per, 1) == stats.bootstrap_interval(per, 1)
    gold = [{"problem_id": "1", "steps": 2, "step_passes": {"1.1": 1, "1.2": 1}, "problem_passes": 1},
            {"problem_id": "2", "steps": 3, "step_passes": {"2.1": 1, "2.2": 1, "2.3": 1}, "problem_passes": 1}]
    iv = stats.bootstrap_interval(gold, 1)
    assert iv["steps_pass@1"] == [1.0, 1.0] and iv["problems_pass@1"] == [1.0, 1.0]


def test_mcnemar_exact():
    assert stats.mcnemar(0, 0) == 1.0
    assert stats.mcnemar(2, 0) == pytest.approx(0.5)            # two flips are never significant
    assert stats.mcnemar(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert stats.mcnemar(6, 1) == pytest.approx(stats.mcnemar(1, 6)) == pytest.approx(16 / 128)


def test_results_yml_carries_pass_at_k_and_intervals(tmp_path):
    from core_evals.scicode.output import parse_output
    (tmp_path / "scicode_results").mkdir()
    (tmp_path / "scicode_results" / "m.json").write_text(json.dumps({
        "steps_pass@1": 0.5, "problems_pass@1": 0.25, "n_samples": 3,
        "stderr": {"steps_pass@1": 0.1, "problems_pass@1": 0.05},
        "pass@k": {"k": [1, 3], "steps_pass@1": 0.5, "steps_pass@3": 0.7, "problems_pass@1": 0.25,
                   "problems_pass@3": 0.4},
        "interval": {"level": 0.95, "steps_pass@1": [0.4, 0.6], "problems_pass@1": [0.1, 0.3]}}))
    m = parse_output(str(tmp_path)).tasks["scicode"].metrics
    assert m["steps_pass@1"].scores["steps_pass@1"].value == 0.5          # unchanged
    assert m["steps_pass@3"].scores["steps_pass@3"].value == 0.7 and m["problems_pass@3"].scores["problems_pass@3"].value == 0.4
    assert "steps_pass@1" in m and "problems_pass@1" in m
    assert m["steps_pass@1_ci95"].scores["lower"].value == 0.4 and m["problems_pass@1_ci95"].scores["upper"].value == 0.3


def test_pass_k_and_baseline_flags():
    from harness.cli.evaluate import parser, run_config
    from harness.errors import UserError
    base = ["--model", "m", "--url", "http://x/v1/chat/completions"]
    c = run_config(parser().parse_args([*base, "--n-samples", "5", "--pass-k", "5,1,2", "--baseline", "b",
                                        "--baseline-alpha", "0.01"]), {})
    assert (c.output.pass_k, str(c.output.baseline), c.output.alpha) == ((1, 2, 5), "b", 0.01)
    with pytest.raises(UserError, match="--pass-k 3 needs"):
        run_config(parser().parse_args([*base, "--pass-k", "3"]), {})
    with pytest.raises(SystemExit):
        parser().parse_args([*base, "--pass-k", "0"])


# ---------------------------------------------------------------- the page of a large run

HOSTILE = "<script>alert('x')</script><img src=http://evil.example/x.png onerror=alert(1)>\"'&"


def _large_run(tmp_path, n=3):
    """A full test split's shape (65 problems, 288 steps) with n samples, every step failing
    with 40 kB of hostile code and 20 kB of error text."""
    sizes = [5] * 23 + [4] * 42          # 23*5 + 42*4 = 283 ... plus 5 below = 288
    sizes[:5] = [6] * 5
    assert sum(sizes) == 288
    out = tmp_path / "run"
    code_dir = out / "generated_code" / "big" / "without_background"
    code_dir.mkdir(parents=True)
    per, records = [], []
    for p, size in enumerate(sizes, start=1):
        sids = [f"{p}.{i}" for i in range(1, size + 1)]
        per.append({"problem_id": str(p), "steps": size, "step_passes": {s: 0 for s in sids}, "problem_passes": 0})
        for s in range(n):
            for sid in sids:
                (code_dir / f"{sid}_{s}.py").write_text((HOSTILE + "x = 1\n") * 600)
                records.append({"problem_id": str(p), "step_id": sid, "sample": s, "status": "error",
                                "error": ("Traceback " + HOSTILE) * 250, "stderr_tail": HOSTILE * 200,
                                "tests": [{"status": "error", "error": HOSTILE * 100}], "duration": 1.5})
    results = {"steps_pass@1": 0.0, "problems_pass@1": 0.0, "n_samples": n, "scored_steps": 288,
               "problems": 65, "per_problem": per, "counts": {"error": 288 * n},
               "interval": stats.bootstrap_interval(per, n),
               "pass@k": {"k": [1, n], **stats.pass_at_k_table(per, n, [1, n])},
               "run": {"model": "big", "split": "test", "benchmark": "scicode", "with_background": False,
                       "seconds": 1.0}}
    return results, records, out


def test_page_of_a_full_test_split_run_with_three_samples_stays_small(tmp_path):
    results, records, out = _large_run(tmp_path)
    path = page.write_run(tmp_path / "big.html", results, records, out)
    html = path.read_text()
    size = path.stat().st_size
    print(f"page of 288 steps x 3 samples, all failing with hostile text: {size / 1e6:.2f} MB")
    assert size < 5_000_000
    assert html.count('data-step=') == 288                          # one grid cell per step
    assert html.count('class="fail"') == 288 * 3                    # every failure listed
    tags = _tags(html)
    assert {t for t, _ in tags} <= SAFE_TAGS, {t for t, _ in tags} - SAFE_TAGS   # hostile text stays text
    assert all(v.startswith("#") for _, attrs in tags for k, v in attrs if k in ("href", "src"))
    assert "&lt;script&gt;alert(" in html and "characters cut" in html
    assert "default-src 'none'" in html   # and the page forbids fetching anything


SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "code", "table",
             "tr", "th", "td", "a", "div", "pre", "details", "summary"}


def _tags(html):
    from html.parser import HTMLParser
    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, [(k, v or "") for k, v in attrs]))
    P().feed(html)
    return found


def test_clip_bounds_the_escaped_size():
    text = HOSTILE * 1000
    for cap in (50, 600, 5000):
        for tail in (False, True):
            cut = page.clip(text, cap, tail=tail)
            assert len(str(page.escape(cut))) <= cap + 80 and "characters cut" in cut
    assert page.clip("short", 100) == "short" and page.clip(None, 10) == ""
