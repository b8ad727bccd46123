"""Statistics of a run and of two paired runs: pass@k, bootstrap intervals over problems,
and the exact McNemar test.

Steps of one problem share a chain, so they are not independent: every interval resamples
whole problems (fixed seed: a rerun prints the same interval).
"""
from __future__ import annotations

from math import comb
from typing import Iterable, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return 1.0 - comb(n - c, k) / comb(n, k)


def default_ks(n: int, ks: Iterable[int] = ()) -> list[int]:
    """The k to report: the given ones, else 1 and n."""
    return sorted(set(ks) or {1, n})


def pass_at_k_table(per_problem: Sequence[dict], n: int, ks: Iterable[int]) -> dict[str, float]:
    """steps_pass@k (mean over scored steps) and problems_pass@k (mean over problems, a problem
    passing when its whole chain does) from score.Scores.per_problem's pass counts."""
    step_counts = [c for p in per_problem for c in p["step_passes"].values()]
    prob_counts = [p["problem_passes"] for p in per_problem if p["steps"]]
    out = {}
    for k in ks:
        out[f"steps_pass@{k}"] = _mean(pass_at_k(n, c, k) for c in step_counts)
        out[f"problems_pass@{k}"] = _mean(pass_at_k(n, c, k) for c in prob_counts)
    return out


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return sum(v) / len(v) if v else 0.0


def _bootstrap(data: tuple, statistic, level: float, resamples: int, seed: int) -> list[float]:
    """BCa interval (scipy) of `statistic` over paired per-problem arrays; a statistic that
    cannot vary (every resample gives the same value) is its own interval."""
    import inspect
    import warnings
    from scipy.stats import bootstrap
    value = float(statistic(*data))
    if len(data[0]) < 2 or all(len(set(d.tolist())) == 1 for d in data):
        return [value, value]
    rng = np.random.default_rng(seed)
    level = expanded_level(level, len(data[0]))
    kw = {"rng": rng} if "rng" in inspect.signature(bootstrap).parameters else {"random_state": rng}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # scipy's degenerate-data notes: handled below
        ci = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=resamples,
                       confidence_level=level, method="BCa", **kw).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [value, value]
    return [min(lo, value), max(hi, value)]


def expanded_level(level: float, units: int) -> float:
    """Hesterberg's expanded level: the bootstrap's spread is the plug-in (divisor P) one and its
    normal quantile too narrow for few units, so ask for sqrt(P/(P-1)) * t(P-1) instead of z."""
    from scipy.stats import norm, t
    if units < 3:
        return level
    q = (units / (units - 1)) ** 0.5 * t.ppf((1 + level) / 2, units - 1)
    return float(2 * norm.cdf(q) - 1)


def _ratio(passes, steps, axis=-1):
    return passes.sum(axis=axis) / steps.sum(axis=axis)


def _mean_of(values, axis=-1):
    return values.mean(axis=axis)


def rates(per_problem: Sequence[dict], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem: passing (sample, step) pairs, (sample, step) pairs, passing chains / n."""
    probs = [p for p in per_problem if p["steps"]]
    passes = np.array([sum(p["step_passes"].values()) for p in probs], dtype=float)
    steps = np.array([p["steps"] * n for p in probs], dtype=float)
    chains = np.array([p["problem_passes"] / n for p in probs], dtype=float)
    return passes, steps, chains


def bootstrap_interval(per_problem: Sequence[dict], n: int, level: float = LEVEL,
                       resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Bootstrap over problems of steps_pass@1 (a ratio: passes / steps) and problems_pass@1
    (a mean of per-problem chain rates)."""
    passes, steps, chains = rates(per_problem, n)
    out = {"level": level, "method": "BCa bootstrap over problems", "resamples": resamples,
           "seed": seed, "steps_pass@1": None, "problems_pass@1": None}
    if len(steps):
        out["steps_pass@1"] = _bootstrap((passes, steps), _ratio, level, resamples, seed)
        out["problems_pass@1"] = _bootstrap((chains,), _mean_of, level, resamples, seed)
    return out


def _step_diff(base, cand, steps, axis=-1):
    return (cand.sum(axis=axis) - base.sum(axis=axis)) / steps.sum(axis=axis)


def _mean_diff(base, cand, axis=-1):
    return (cand - base).mean(axis=axis)


def paired_difference_interval(base: dict[str, np.ndarray], cand: dict[str, np.ndarray],
                               level: float = LEVEL, resamples: int = RESAMPLES,
                               seed: int = SEED) -> dict[str, list[float]]:
    """Interval of candidate minus baseline, resampling the problems both runs share.
    base/cand: per problem arrays "passes" (step passes over the paired samples), "steps"
    ((sample, step) pairs), "chains" (passing chains / paired samples)."""
    if len(base["steps"]) == 0:
        return {"steps_pass@1": [0.0, 0.0], "problems_pass@1": [0.0, 0.0]}
    return {"steps_pass@1": _bootstrap((base["passes"], cand["passes"], base["steps"]), _step_diff,
                                       level, resamples, seed),
            "problems_pass@1": _bootstrap((base["chains"], cand["chains"]), _mean_diff,
                                          level, resamples, seed)}


def mcnemar(worse: int, better: int) -> float:
    """Exact (two-sided binomial) McNemar p-value from the discordant pairs: `worse` pairs passed
    only in the baseline, `better` only in the candidate."""
    from scipy.stats import binomtest
    total = worse + better
    if total == 0:
        return 1.0
    return float(binomtest(better, total, 0.5).pvalue)
