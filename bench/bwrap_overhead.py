"""Issue 20 -- bubblewrap's cost: the gold dev run under `--sandbox bwrap` against `process` and
`docker`, same workers, rounds rotating the order, in one invocation; then one job's cost.

    python bench/bwrap_overhead.py [--rounds 1] [--workers 2] [--concurrency 16] [--probes 9]

Each run is the whole `scicode_eval --split dev` command against the built-in reference
endpoint (gold code), fresh output directory. Reported: wall time per run, the bwrap/process
(goal <= 1.05) and bwrap/docker (goal <= 1.0) ratios of the medians, summed in-sandbox job
time; then the median time of one `import numpy, scipy` job per backend (no warm pool).
Prints a markdown section (append it to bench/RESULTS.md by hand; run_all.py does not run it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (LoadSampler, RUNS, counts, ensure_history, fmt_counts, fresh_dir, log,  # noqa: E402
                     median, reference_server, run_eval, write_json)

MODES = ("bwrap", "process", "docker")
GOALS = {"process": 1.05, "docker": 1.0}
IMPORTS = "import numpy, scipy\n"


def one_run(url: str, mode: str, workers: int, concurrency: int, tag: str) -> dict:
    out = fresh_dir(f"bwrap/{tag}")
    args = ["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox", mode,
            "--eval-threads", str(workers), "--concurrent-requests", str(concurrency)]
    with LoadSampler() as load:
        r = run_eval(args, out)
    r.update(load=load.summary(), mode=mode, counts=counts(r["records"]))
    if r["rc"] != 0 or r["counts"].get("pass", 0) != 50:
        log(f"{tag}: rc={r['rc']} counts={r['counts']}\n{r['stderr'][-2000:]}")
    r["job_seconds"] = sum(x.get("duration", 0.0) for x in r["records"])
    log(f"{tag}: {mode} wall {r['wall']:.1f}s, jobs {r['job_seconds']:.1f}s, load {r['load']['load_mean']:.1f}")
    return r


def job_cost(n: int) -> dict:
    """Median seconds of one `import numpy, scipy` job per backend, cold (no warm pool)."""
    from harness.sandbox import Job, Limits
    from harness.sandbox.registry import get_backend
    lim = Limits(timeout=60, memory="2g")
    bes = {m: get_backend(m, workers=1, limits=lim, warm=False) for m in MODES}
    times: dict = {m: [] for m in MODES}
    try:
        for i in range(n):
            for m in MODES[i % 3:] + MODES[:i % 3]:
                t = time.monotonic()
                o = bes[m].run(Job(code=IMPORTS, limits=lim))
                times[m].append(time.monotonic() - t if o.status == "ok" else None)
    finally:
        for be in bes.values():
            be.close()
    return {m: median(v) for m, v in times.items()}


def run(rounds: int = 1, workers: int = 2, concurrency: int = 16, n_probes: int = 9) -> dict:
    ensure_history(workers)
    runs = []
    with reference_server("gold") as url:
        for i in range(rounds):
            for mode in MODES[i % 3:] + MODES[:i % 3]:
                runs.append(one_run(url, mode, workers, concurrency, f"r{i + 1}-{mode}"))
    med = {m: median(r["wall"] for r in runs if r["mode"] == m) for m in MODES}
    res = {"rounds": rounds, "workers": workers, "concurrency": concurrency, "median_wall": med,
           "ratios": {m: med["bwrap"] / med[m] for m in GOALS},
           "job_seconds": {m: median(r["job_seconds"] for r in runs if r["mode"] == m) for m in MODES},
           "runs": [{k: v for k, v in r.items() if k not in ("records", "rss_series", "stdout")}
                    for r in runs]}
    log("one job: import numpy, scipy ...")
    res["job_cost"] = job_cost(n_probes)
    res["n_probes"] = n_probes
    write_json(RUNS / "bwrap" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    L = ["## bubblewrap (issue 20)", "",
         f"Gold dev run (50 steps, reference endpoint), `--eval-threads {res['workers']} "
         f"--concurrent-requests {res['concurrency']}`, `--sandbox` bwrap vs process vs docker, "
         f"{res['rounds']} round(s) rotating the order, fresh output directory each run.", "",
         "| run | sandbox | wall (s) | summed job time (s) | verdicts | 1-min load (mean) |",
         "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        L.append(f"| {r['cmd'][r['cmd'].index('--output-dir') + 1].split('/')[-1]} | {r['mode']} | "
                 f"{r['wall']:.1f} | {r['job_seconds']:.1f} | {fmt_counts(r['counts'])} | "
                 f"{r['load']['load_mean']:.2f} |")
    L.append("")
    for m, goal in GOALS.items():
        x = res["ratios"][m]
        L.append(f"**bwrap/{m} wall-time ratio (medians): {x:.2f}** (goal <= {goal}: "
                 f"{'meets' if x <= goal else '**misses**'}).  ")
    jc = res["job_cost"]
    L += ["", f"One cold `import numpy, scipy` job, median of {res['n_probes']} (s): "
          + ", ".join(f"{m} {jc[m]:.3f}" if jc[m] is not None else f"{m} n/a" for m in MODES) + ".", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--probes", type=int, default=9)
    a = ap.parse_args()
    print(run(a.rounds, a.workers, a.concurrency, a.probes)["markdown"])


if __name__ == "__main__":
    main()
