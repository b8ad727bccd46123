"""Strict grading: its cost on the gold dev run, and verdict parity with in-process grading.

    python bench/strict_grading.py [--rounds 2] [--workers 2]

Cost: gold dev run in the Docker sandbox, --grading strict vs --grading inprocess,
alternated rounds, median wall ratio (goal <= 1.05).
Parity: the reference endpoint's honest modes (gold; wrong = perturbed return values;
exit = exit()/os._exit calls; sleep = never returns, under a short timeout), each run
under both gradings; per candidate, the strict verdict must equal the in-process one.
Prints a markdown section for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ensure_history, fmt_counts, counts, fresh_dir, log, median,  # noqa: E402
                     reference_server, run_eval)


def one(mode: str, grading: str, workers: int, timeout: float, tag: str, extra=()) -> dict:
    with reference_server(mode) as url:
        r = run_eval(["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox",
                      "docker", "--eval-threads", str(workers), "--grading", grading,
                      "--sandbox-timeout", str(timeout), *extra], fresh_dir(f"strict-{tag}"))
    if r["rc"] != 0:
        raise SystemExit(f"{mode}/{grading} failed (rc {r['rc']}): {r['stderr'][-1500:]}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", default="gold,wrong,exit,sleep")
    a = ap.parse_args()
    ensure_history(a.workers)
    walls = {"strict": [], "inprocess": []}
    last = {}
    peaks = {"strict": [], "inprocess": []}
    for rnd in range(a.rounds):
        order = ("strict", "inprocess") if rnd % 2 == 0 else ("inprocess", "strict")
        for g in order:
            r = one("gold", g, a.workers, 1800, f"cost-{g}-{rnd}")
            walls[g].append(r["wall"])
            last[g] = r
            peaks[g].append(r["peak_rss_root"])
            log(f"round {rnd + 1} {g}: {r['wall']:.1f}s {fmt_counts(counts(r['records']))}")
    ratio = median(walls["strict"]) / median(walls["inprocess"])
    rows = []
    total_same = total = 0
    for mode in [m for m in a.modes.split(",") if m]:
        # sleep: every step times out, so 3 problems under a 5 s limit
        timeout, extra = (5, ("--limit-samples", "3")) if mode == "sleep" else (1800, ())
        res = (dict(last) if mode == "gold" else
               {g: one(mode, g, a.workers, timeout, f"parity-{mode}-{g}", extra) for g in ("strict", "inprocess")})
        by = {g: {(r["sample"], r["step_id"]): r["status"] for r in res[g]["records"]} for g in res}
        same = sum(1 for k in by["strict"] if by["strict"][k] == by["inprocess"].get(k))
        diff = sorted(k[1] for k in by["strict"] if by["strict"][k] != by["inprocess"].get(k))
        total_same += same
        total += len(by["strict"])
        rows.append(f"| {mode} | {fmt_counts(counts(res['strict']['records']))} | "
                    f"{fmt_counts(counts(res['inprocess']['records']))} | {same}/{len(by['strict'])} | "
                    f"{', '.join(diff) or '-'} |")
    print("## Strict grading (issue 11)\n")
    print(f"Gold dev run, Docker, {a.workers} workers, {a.rounds} alternated round(s) each: strict "
          f"{median(walls['strict']):.1f} s, in-process {median(walls['inprocess']):.1f} s: "
          f"**ratio {ratio:.3f}** (goal <= 1.05). Harness peak RSS: strict "
          f"{max(peaks['strict']) / 2**20:.0f} MB, in-process {max(peaks['inprocess']) / 2**20:.0f} MB.\n")
    if rows:
        print("| answers | strict verdicts | in-process verdicts | same verdict | differing steps |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\nParity: {total_same}/{total} candidates get the same verdict.")
    print("\nPer round (s): strict " + ", ".join(f"{w:.1f}" for w in walls["strict"])
          + "; in-process " + ", ".join(f"{w:.1f}" for w in walls["inprocess"]))


if __name__ == "__main__":
    main()
