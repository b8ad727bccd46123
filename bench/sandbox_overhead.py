"""Sandbox overhead: jobs/s for a trivial numpy job, per backend and worker count.

    python bench/sandbox_overhead.py [--jobs 40] [--workers 1,2] [--rounds 3] [--image REF]

Configurations: docker cold (one container created per job), docker warm pool
(single-use pre-started containers) and the process backend. All run the same
tests-mode job through the same `Backend.run`, so the figures include the runner,
the report and container removal. Throughputs are reported as ratios to the
process backend at the same worker count, all measured in this one run. Prints a
markdown table; makes no assertions (machine load matters: note it with the table).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sandbox import Job, Limits  # noqa: E402

LIMITS = Limits(timeout=60, memory="1g", cpus=1.0)
CODE = "import numpy as np\n\ndef f(n):\n    return int(np.arange(n).sum())\n"
TESTS = ["assert f(10) == target"]


def job() -> Job:
    return Job(code=CODE, tests=list(TESTS), targets=[45], limits=LIMITS)


def make(kind: str, workers: int, image, warm_size=None):
    from harness.sandbox.registry import get_backend
    if kind == "process":
        return get_backend("process", workers=workers, limits=LIMITS)
    return get_backend("docker", image=image, explicit_image=bool(image), workers=workers,
                       limits=LIMITS, warm=(kind == "docker warm pool"), warm_size=warm_size)


def measure(kind: str, workers: int, n: int, image, warm_size=None) -> dict:
    be = make(kind, workers, image, warm_size)
    try:
        with ThreadPoolExecutor(workers) as ex:
            for o in ex.map(lambda _: be.run(job()), range(2 * workers)):   # warm-up
                assert o.status == "ok", o.to_dict()
            lat = []

            def one(_):
                t = time.monotonic()
                o = be.run(job())
                lat.append(time.monotonic() - t)
                return o
            t0 = time.monotonic()
            outs = list(ex.map(one, range(n)))
            wall = time.monotonic() - t0
        bad = [o.to_dict() for o in outs if o.status != "ok"]
        if bad:
            raise SystemExit(f"{kind}: {len(bad)} jobs failed, e.g. {bad[0]}")
        extra = be.stats() if hasattr(be, "stats") else {}
        return {"kind": kind, "workers": workers, "jobs_s": n / wall,
                "p50": statistics.median(lat), "p95": sorted(lat)[int(0.95 * (len(lat) - 1))],
                **extra}
    finally:
        be.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40, help="timed jobs per configuration")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--image", default=None, help="sandbox image (default: the harness's)")
    ap.add_argument("--warm-size", type=int, default=None,
                    help="warm containers kept ready (default: the backend's, 2 x workers)")
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    kinds = ["process", "docker cold", "docker warm pool"]
    runs: dict[tuple, list[dict]] = {}
    loads = []
    for rnd in range(args.rounds):            # interleaved rounds damp drifting machine load
        for w in workers:
            for k in kinds:
                r = measure(k, w, args.jobs, args.image, args.warm_size)
                runs.setdefault((k, w), []).append(r)
                loads.append(os.getloadavg()[0])
                print(f"  round {rnd + 1}: {k:<17} workers={w}: {r['jobs_s']:.2f} jobs/s",
                      file=sys.stderr)
    rows = []
    for (k, w), rs in runs.items():
        rows.append({"kind": k, "workers": w,
                     "jobs_s": statistics.median(r["jobs_s"] for r in rs),
                     "p50": statistics.median(r["p50"] for r in rs),
                     "p95": statistics.median(r["p95"] for r in rs),
                     "warm_hits": sum(r.get("warm_hits", 0) for r in rs)})
    base = {r["workers"]: r["jobs_s"] for r in rows if r["kind"] == "process"}
    print(f"\nTrivial numpy job (tests mode): median of {args.rounds} interleaved round(s) of "
          f"{args.jobs} timed jobs per row; {os.cpu_count()} CPUs; 1-min load average during "
          f"the run {min(loads):.2f}..{max(loads):.2f}\n")
    print("| backend | workers | jobs/s | ratio to process | p50 latency (s) | p95 latency (s) |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["workers"], kinds.index(r["kind"]))):
        ratio = r["jobs_s"] / base[r["workers"]]
        print(f"| {r['kind']} | {r['workers']} | {r['jobs_s']:.2f} | {ratio:.2f} | "
              f"{r['p50']:.3f} | {r['p95']:.3f} |")


if __name__ == "__main__":
    main()
