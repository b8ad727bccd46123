"""Goal 4 -- memory: the harness's peak RSS over a full run with --n-samples 3 stays
under 300 MB.

    python bench/memory.py [--sandbox docker] [--latency 0] [--gold]

A full dev run with --n-samples 3 (45 chains, 150 candidates) against a fake
endpoint with no latency (every chain's requests and every candidate are queued at
once: the worst case for what the harness holds), the Docker backend, 2 workers.
The harness is measured from outside: its RSS sampled every 50 ms with psutil and
its exact high-water mark (ru_maxrss from wait4; with the Docker backend the jobs
are not its children, so this is the harness alone). Every candidate still
carries its step's real targets into the sandbox (7.1 and 6.1 ship 41 and 28 MB of
encoded arrays), so the target reading, encoding, cache keys and payloads are all
exercised; the answers fail fast. `--gold` answers with the reference endpoint's
gold code instead (real outputs, but it takes 3 gold runs' compute).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RUNS, counts, fake_endpoint_class, fmt_counts, fmt_mb, fresh_dir, log, reference_server,  # noqa: E402
                     run_eval, write_json)

GOAL_MB = 300
ANSWER = "```python\ndef bench_stub():\n    return None\n```"


def _peak(r: dict) -> int:
    return max(r.get("maxrss_wait4") or 0, r["peak_rss_root"])


def one(url: str, n_samples: int, sandbox: str, workers: int, concurrency: int, tag: str) -> dict:
    out = fresh_dir(f"memory/{tag}")
    args = ["--model", "bench-model", "--url", url, "--split", "dev", "--n-samples", str(n_samples),
            "--sandbox", sandbox, "--eval-threads", str(workers), "--concurrent-requests", str(concurrency)]
    r = run_eval(args, out)
    r["counts"] = counts(r["records"])
    if r["rc"] != 0:
        log(f"memory {tag}: rc={r['rc']}\n{r['stderr'][-2000:]}")
    series = r["rss_series"]
    r["rss_at"] = {f"{q}": series[min(int(q * len(series)), len(series) - 1)][1] if series else None
                   for q in (0.1, 0.5, 0.9)}
    r["peak"] = _peak(r)
    return r


def run(n_samples: int = 3, sandbox: str = "docker", workers: int = 2, latency: float = 0.0,
        gold: bool = False, extra: list | None = None) -> dict:
    if gold:
        with reference_server("gold") as url:
            r = one(url, n_samples, sandbox, workers, 45, "gold")
    else:
        FakeEndpoint = fake_endpoint_class()
        with FakeEndpoint(lambda p, b: ANSWER, latency=latency) as ep:
            r = one(ep.url, n_samples, sandbox, workers, 45, "fake")
    log(f"memory: peak {fmt_mb(r['peak'])} MB over {r['wall']:.0f}s, counts {r['counts']}")
    rows = [{"what": f"dev, --n-samples {n_samples}, {'gold code' if gold else 'fast-failing answers'}, "
                     f"endpoint latency {latency:g} s, --sandbox {sandbox}, {workers} workers",
             "peak": r["peak"], "sampled": r["peak_rss_root"], "wall": r["wall"], "counts": r["counts"]}]
    for e in extra or []:
        rows.append(e)
    res = {"rows": rows, "goal_mb": GOAL_MB, "series": r["rss_series"]}
    write_json(RUNS / "memory" / "summary.json", res)
    res["markdown"] = markdown(res)
    res["peak"] = r["peak"]
    return res


def markdown(res: dict) -> str:
    L = ["| run | harness peak RSS (MB, wait4) | sampled peak (MB) | wall (s) | verdicts |",
         "|---|---|---|---|---|"]
    for row in res["rows"]:
        c = fmt_counts(row.get("counts"))
        L.append(f"| {row['what']} | **{fmt_mb(row['peak'])}** | {fmt_mb(row.get('sampled'))} | "
                 f"{row.get('wall', 0):.0f} | {c} |")
    first = res["rows"][0]["peak"]
    L += ["", f"Goal: < {res['goal_mb']} MB for the n-samples-3 run: "
              f"{'meets' if first < res['goal_mb'] * 2**20 else 'misses'} ({fmt_mb(first)} MB)."]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=3)
    ap.add_argument("--sandbox", default="docker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--gold", action="store_true")
    a = ap.parse_args(argv)
    t = time.monotonic()
    res = run(a.n_samples, a.sandbox, a.workers, a.latency, a.gold)
    print(res["markdown"])
    log(f"memory took {time.monotonic() - t:.0f}s")


if __name__ == "__main__":
    main()
