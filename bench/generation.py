"""Goal 3 -- generation at the critical path: a fake endpoint with a fixed latency L
per request, the full dev split with --n-samples 3, wall time against the critical
path (the longest chain of sequential steps x L).

    python bench/generation.py [--latency 5] [--concurrency 45,16] [--sandbox docker]

Each chain (problem x sample) must ask its steps one after the other, so no
schedule beats (longest chain) x L; the dev split's longest chain is problem 10's
11 steps. The endpoint answers every prompt after exactly L seconds with a small
code block (the tests then fail fast, so execution stays light and the figure is
about generation scheduling; executions still run, pipelined, in the sandbox).
Reported per concurrency: the command's wall time and the generation span (first
request sent to last answer received) as multiples of the critical path, the fixed
cost outside generation (start-up before the first request, tail after the last
answer), the most requests in flight, and the harness's peak RSS.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RUNS, LoadSampler, counts, fake_endpoint_class, fmt_counts, fmt_mb, fresh_dir, log,  # noqa: E402
                     run_eval, write_json)

GOAL = 1.2
ANSWER = "```python\ndef bench_stub():\n    return None\n```"


def critical_steps(split: str = "dev") -> int:
    from harness.data import dataset
    return max(sum(1 for s in p["sub_steps"] if s["step_number"] not in dataset.SKIPPED_STEPS)
               for p in dataset.load_problems(split))


def total_requests(split: str, n: int) -> int:
    from harness.data import dataset
    return n * sum(1 for p in dataset.load_problems(split) for s in p["sub_steps"]
                   if s["step_number"] not in dataset.SKIPPED_STEPS)


def one_run(latency: float, concurrency: int, n_samples: int, sandbox: str, workers: int,
            tag: str, answer: str = ANSWER) -> dict:
    FakeEndpoint = fake_endpoint_class()
    out = fresh_dir(f"generation/{tag}")
    with FakeEndpoint(lambda prompt, body: answer, latency=latency) as ep:
        args = ["--model", "bench-model", "--url", ep.url, "--split", "dev", "--n-samples", str(n_samples),
                "--sandbox", sandbox, "--eval-threads", str(workers),
                "--concurrent-requests", str(concurrency)]
        t0 = time.monotonic()
        with LoadSampler() as load:
            r = run_eval(args, out)
        reqs = [q for q in ep.requests if q.method == "POST"]
        r["requests"] = len(reqs)
        r["max_in_flight"] = ep.max_in_flight
        if reqs:
            first = min(q.t_start for q in reqs)
            last = max(q.t_end for q in reqs)
            r["gen_span"] = last - first
            r["startup"] = first - t0
            r["tail"] = (t0 + r["wall"]) - last
    r["load"] = load.summary()
    r["counts"] = counts(r["records"])
    r["concurrency"] = concurrency
    if r["rc"] != 0:
        log(f"{tag}: rc={r['rc']}\n{r['stderr'][-2000:]}")
    return r


def run(latency: float = 5.0, concurrencies=(45, 16), n_samples: int = 3, sandbox: str = "docker",
        workers: int = 2) -> dict:
    steps = critical_steps()
    cp = steps * latency
    runs = []
    for c in concurrencies:
        r = one_run(latency, c, n_samples, sandbox, workers, f"c{c}")
        log(f"generation c={c}: wall {r['wall']:.1f}s = {r['wall'] / cp:.2f}x critical path, "
            f"span {r.get('gen_span', 0):.1f}s, in flight max {r.get('max_in_flight')}")
        runs.append({k: v for k, v in r.items() if k not in ("records", "rss_series", "stdout")})
    res = {"latency": latency, "steps": steps, "critical_path": cp, "n_samples": n_samples,
           "sandbox": sandbox, "workers": workers, "requests": total_requests("dev", n_samples),
           "chains": 15 * n_samples, "runs": runs}
    write_json(RUNS / "generation" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    cp = res["critical_path"]
    L = [f"Full dev split, `--n-samples {res['n_samples']}` ({res['chains']} chains, {res['requests']} "
         f"requests), fake endpoint with L = {res['latency']:g} s per request, `--sandbox {res['sandbox']} "
         f"--eval-threads {res['workers']}`. Critical path: {res['steps']} sequential steps (problem 10) "
         f"x L = {cp:g} s. The throughput bound at concurrency C is requests x L / C.", "",
         "| --concurrent-requests | wall (s) | wall / critical path | generation span / critical path | "
         "start-up before 1st request (s) | tail after last answer (s) | max in flight | verdicts | "
         "harness peak RSS (MB) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        c = fmt_counts(r["counts"])
        bound = max(cp, res["requests"] * res["latency"] / r["concurrency"])
        L.append(f"| {r['concurrency']} (bound {bound:.0f} s) | {r['wall']:.1f} | **{r['wall'] / cp:.2f}** | "
                 f"{r.get('gen_span', 0) / cp:.2f} | {r.get('startup', 0):.1f} | {r.get('tail', 0):.1f} | "
                 f"{r.get('max_in_flight')} | {c} | {fmt_mb(r.get('maxrss_wait4') or r['peak_rss_root'])} |")
    best = min(r["wall"] for r in res["runs"]) / cp
    L += ["", f"Best wall / critical path: **{best:.2f}** (goal <= {GOAL}: "
              f"{'meets' if best <= GOAL else 'misses'}). Per step of the longest chain, the harness adds "
              f"{(min(r.get('gen_span', cp) for r in res['runs']) - cp) / res['steps']:.2f} s between an "
              f"answer and the next request (span - critical path, over {res['steps']} steps)."]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=5.0)
    ap.add_argument("--concurrency", default="45,16")
    ap.add_argument("--n-samples", type=int, default=3)
    ap.add_argument("--sandbox", default="docker")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    t = time.monotonic()
    res = run(a.latency, [int(x) for x in a.concurrency.split(",") if x], a.n_samples, a.sandbox, a.workers)
    print(res["markdown"])
    log(f"generation took {time.monotonic() - t:.0f}s")


if __name__ == "__main__":
    main()
