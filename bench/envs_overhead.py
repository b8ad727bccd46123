"""Issue 19 -- the cost of a second sandbox environment: `--sandbox-envs 2024,2025` against
`--sandbox-envs 2024`, on gold answers (which pass in the first, so the second never runs) and
on all-wrong answers (which run in both); then gold under `2025` alone.

    python bench/envs_overhead.py [--rounds 2] [--workers 2] [--concurrency 16]

Each run is the whole `scicode_eval --split dev` command against the built-in reference
endpoint (gold, or `wrong`: perturbed return values), fresh output directory, alternated
order per round. Reported: the medians, the two ratios (goals: gold <= 1.05, wrong <= 2.05),
and for the 2025-alone gold run the count that passes and each failure with its cause.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RUNS, counts, ensure_history, fmt_counts, fresh_dir, log, median,  # noqa: E402
                     reference_server, run_eval, write_json)

GOALS = {"gold": 1.05, "wrong": 2.05}
ONE, TWO = "2024", "2024,2025"


def one_run(url: str, envs: str, workers: int, concurrency: int, tag: str) -> dict:
    out = fresh_dir(f"envs/{tag}")
    r = run_eval(["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox", "docker",
                  "--sandbox-envs", envs, "--eval-threads", str(workers),
                  "--concurrent-requests", str(concurrency)], out)
    r["envs"], r["counts"] = envs, counts(r["records"])
    res = next(iter((out / "scicode_results").glob("*.json")), None)
    r["sandbox_envs"] = json.loads(res.read_text())["run"]["sandbox_envs"] if res else None
    log(f"{tag}: envs {envs} wall {r['wall']:.1f}s rc {r['rc']} counts {fmt_counts(r['counts'])}")
    return r


def run(rounds: int = 2, workers: int = 2, concurrency: int = 16) -> dict:
    ensure_history(workers)
    res: dict = {"rounds": rounds, "workers": workers}
    for mode in ("gold", "wrong"):
        runs = []
        with reference_server(mode) as url:
            for i in range(rounds):
                for envs in ((ONE, TWO) if i % 2 == 0 else (TWO, ONE)):
                    runs.append(one_run(url, envs, workers, concurrency, f"{mode}-r{i + 1}-{envs}"))
        med = {e: median(r["wall"] for r in runs if r["envs"] == e) for e in (ONE, TWO)}
        res[mode] = {"median_wall": med, "ratio": med[TWO] / med[ONE],
                     "counts": {e: next(r["counts"] for r in runs if r["envs"] == e) for e in (ONE, TWO)},
                     "ran_in": next(r["sandbox_envs"]["counts"] for r in runs if r["envs"] == TWO),
                     "walls": [(r["envs"], round(r["wall"], 1)) for r in runs]}
    with reference_server("gold") as url:
        r = one_run(url, "2025", workers, concurrency, "gold-2025")
    res["gold_2025"] = {"counts": r["counts"], "wall": r["wall"],
                        "failures": [(x["step_id"], x["status"], (x.get("error") or "")[:200])
                                     for x in r["records"] if x["status"] != "pass"]}
    write_json(RUNS / "envs" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    rows = ["| answers | `--sandbox-envs 2024` (median s) | `2024,2025` (median s) | ratio | goal | "
            "jobs run per env (2024,2025) |", "|---|---|---|---|---|---|"]
    for mode in ("gold", "wrong"):
        m = res[mode]
        ran = ", ".join(f"{e}: {fmt_counts(c)}" for e, c in m["ran_in"].items())
        rows.append(f"| {mode} | {m['median_wall'][ONE]:.1f} | {m['median_wall'][TWO]:.1f} | "
                    f"**{m['ratio']:.3f}** | <= {GOALS[mode]} | {ran} |")
    g = res["gold_2025"]
    fails = "; ".join(f"{s} {st}: {e}" for s, st, e in g["failures"]) or "none"
    rows += ["", f"Gold dev under `--sandbox-envs 2025` alone: {fmt_counts(g['counts'])} "
             f"({g['wall']:.1f} s); failures: {fails}.",
             f"Rounds: {res['rounds']} alternated per answer set, {res['workers']} workers; runs: "
             + "; ".join(f"{mode} " + ", ".join(f"{e} {w}s" for e, w in res[mode]["walls"])
                         for mode in ("gold", "wrong")) + "."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    print(run(a.rounds, a.workers, a.concurrency)["markdown"])


if __name__ == "__main__":
    main()
