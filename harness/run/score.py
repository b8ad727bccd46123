"""Metrics from verdicts.

steps_pass@1    = mean over samples of (passing scored steps / scored steps)
problems_pass@1 = mean over samples of [every scored step of the problem passes]
Scored steps are all steps but the never-asked 13.6, 62.1 and 76.3 (288 test / 50 dev /
338 all; SciCode-Verified: 287). A scored step without test cases (SciCode-Verified's 72.6,
whose nondeterministic tests its authors removed) passes when the candidate's program runs
to its end, and is an error otherwise.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from harness.data.dataset import SKIPPED_STEPS
from harness.run.status import STEP_STATUSES, StepStatus

NV_SKIP = {"13": 6, "62": 1, "76": 3}  # the steps NVIDIA 26.3 means to skip (1-based)


@dataclass
class Scores:
    steps: float
    problems: float
    per_sample_steps: list[float]
    per_sample_problems: list[float]
    scored_steps: int
    n_problems: int
    n_samples: int
    counts: dict[StepStatus, int] = field(default_factory=dict)
    per_problem: list[dict] = field(default_factory=list)
    num_correct: dict = field(default_factory=dict)
    nvidia: dict = field(default_factory=dict)


def scored_steps(problem: dict) -> list[str]:
    return [s["step_number"] for s in problem["sub_steps"] if s["step_number"] not in SKIPPED_STEPS]


def stderr(values: list[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def score(problems: list[dict], verdicts: dict[tuple[int, str], StepStatus], n_samples: int) -> Scores:
    """verdicts: (sample, step_id) -> status; a missing verdict counts as gen_error."""
    steps_by_problem = {p["problem_id"]: scored_steps(p) for p in problems}
    total = sum(len(v) for v in steps_by_problem.values())
    counts: Counter = Counter()
    per_s_steps, per_s_probs = [], []
    passes = defaultdict(int)  # step_id -> passing samples
    prob_passes = defaultdict(int)
    for s in range(n_samples):
        ok_steps = ok_probs = 0
        for pid, steps in steps_by_problem.items():
            all_ok = True
            for sid in steps:
                st = verdicts.get((s, sid), "gen_error")
                counts[st] += 1
                if st == "pass":
                    ok_steps += 1
                    passes[sid] += 1
                else:
                    all_ok = False
            if all_ok and steps:
                ok_probs += 1
                prob_passes[pid] += 1
        per_s_steps.append(ok_steps / total if total else 0.0)
        per_s_probs.append(ok_probs / len(steps_by_problem) if steps_by_problem else 0.0)
    table = [{"problem_id": pid, "steps": len(steps),
              "step_passes": {sid: passes[sid] for sid in steps},
              "problem_passes": prob_passes[pid]} for pid, steps in steps_by_problem.items()]
    num_correct: dict = defaultdict(dict)  # NVIDIA's shape: {problem: {step number within problem: count}}
    for p in problems:
        for sid in steps_by_problem[p["problem_id"]]:
            num_correct[p["problem_id"]][sid.split(".")[1]] = passes[sid]
    return Scores(
        steps=sum(per_s_steps) / n_samples, problems=sum(per_s_probs) / n_samples,
        per_sample_steps=per_s_steps, per_sample_problems=per_s_probs,
        scored_steps=total, n_problems=len(steps_by_problem), n_samples=n_samples,
        counts={k: counts.get(k, 0) for k in STEP_STATUSES}, per_problem=table,
        num_correct=dict(num_correct), nvidia=nvidia_26_3(problems, passes, n_samples))


def nvidia_26_3(problems: list[dict], passes: dict[str, int], n: int) -> dict:
    """What nvidia-scicode 26.3 would report for the same verdicts: its skip check never
    fires (the skipped step scores 0 and the problem's last step is never looked at),
    and its problem metric multiplies per-step pass rates."""
    step_rates, prob_scores, denom = [], [], 0
    for p in problems:
        pid = p["problem_id"]
        n_steps = len(p["sub_steps"]) - (1 if pid in NV_SKIP else 0)
        denom += n_steps
        prod = 1.0
        for i in range(n_steps):
            rate = passes.get(f"{pid}.{i + 1}", 0) / n
            prod *= rate
            step_rates.append(rate)
        prob_scores.append(prod)
    return {"steps_pass@1": sum(step_rates) / denom if denom else 0.0,
            "problems_pass@1": sum(prob_scores) / len(prob_scores) if prob_scores else 0.0,
            "note": "nvidia-scicode 26.3 metric on these verdicts (skip bug, product of step rates)"}
