"""Issue 14 -- gVisor's cost: the gold dev run under `--sandbox-runtime runsc` against runc,
same workers, alternated rounds in one invocation; then where the time goes.

    python bench/runsc_overhead.py [--rounds 2] [--workers 2] [--concurrency 16] [--write]

Each run is the whole `scicode_eval --split dev --sandbox docker` command against the
built-in reference endpoint (gold code), fresh output directory, rounds alternating the
order (C G, G C, ...). Reported: wall time per run, the runsc/runc ratio of the medians
(goal <= 1.3), per-round ratios, summed in-sandbox job time and the heaviest steps per
runtime. Then three probes, each alternated between the runtimes (medians of --probes):

- container start: create + attach + start + `pass` + remove, cold (no warm pool);
- imports: `import numpy, scipy` inside an already started container (system calls);
- memory faults: touching 512 MB of fresh pages inside a started container.

`--write` puts the section into bench/RESULTS.md between its markers (run_all.py
writes the whole file instead, with this section in it).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (BENCH, LoadSampler, RUNS, counts, ensure_history, fmt_counts, fresh_dir, log,  # noqa: E402
                     median, reference_server, run_eval, write_json)

GOAL = 1.3
RUNTIMES = ("runc", "runsc")
BEGIN, END = "<!-- runsc:begin -->", "<!-- runsc:end -->"

IMPORTS = "import time; t=time.perf_counter(); import numpy, scipy, scipy.integrate, scipy.linalg; " \
          "print(time.perf_counter()-t)"
FAULTS = "import time, mmap; n=512<<20; m=mmap.mmap(-1, n); t=time.perf_counter()\n" \
         "for i in range(0, n, 4096): m[i] = 1\nprint(time.perf_counter()-t)"


def one_run(url: str, runtime: str, workers: int, concurrency: int, tag: str) -> dict:
    out = fresh_dir(f"runsc/{tag}")
    args = ["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox", "docker",
            "--sandbox-runtime", runtime, "--eval-threads", str(workers),
            "--concurrent-requests", str(concurrency)]
    with LoadSampler() as load:
        r = run_eval(args, out)
    r["load"] = load.summary()
    r["runtime"] = runtime
    c = counts(r["records"])
    r["counts"] = c
    if r["rc"] != 0 or c.get("pass", 0) != 50:
        log(f"{tag}: rc={r['rc']} counts={c}\n{r['stderr'][-2000:]}")
    r["job_seconds"] = sum(x.get("duration", 0.0) for x in r["records"])
    r["durations"] = {x["step_id"]: x.get("duration") for x in r["records"]}
    log(f"{tag}: {runtime} wall {r['wall']:.1f}s, jobs {r['job_seconds']:.1f}s, "
        f"load {r['load']['load_mean']:.1f}, counts {c}")
    return r


def probes(n: int) -> dict:
    """Medians per runtime of: cold start (create..remove), imports and page faults in a job."""
    from harness.sandbox import Job, Limits
    from harness.sandbox.docker_backend import DockerBackend
    lim = Limits(timeout=120, memory="2g")
    res = {rt: {"start": [], "imports": [], "faults": []} for rt in RUNTIMES}
    bes = {rt: DockerBackend(workers=1, limits=lim, warm=False, runtime=rt, sweep=False)
           for rt in RUNTIMES}
    try:
        for i in range(n):
            for rt in (RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]):
                be = bes[rt]
                t = time.monotonic()
                o = be.run(Job(code="pass", limits=lim))
                res[rt]["start"].append(time.monotonic() - t if o.status == "ok" else None)
                for what, code in (("imports", IMPORTS), ("faults", FAULTS)):
                    o = be.run(Job(code=code, limits=lim))
                    res[rt][what].append(float(o.stdout.split()[-1]) if o.status == "ok" else None)
    finally:
        for be in bes.values():
            be.close()
    return {rt: {k: median(v) for k, v in d.items()} for rt, d in res.items()}


def run(rounds: int = 2, workers: int = 2, concurrency: int = 16, n_probes: int = 5) -> dict:
    ensure_history(workers)
    runs = []
    with reference_server("gold") as url:
        for i in range(rounds):
            for rt in (RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]):
                runs.append(one_run(url, rt, workers, concurrency, f"r{i + 1}-{rt}"))
    by = {rt: [r for r in runs if r["runtime"] == rt] for rt in RUNTIMES}
    med = {rt: median(r["wall"] for r in rs) for rt, rs in by.items()}
    per_round = []
    for i in range(rounds):
        pair = {r["runtime"]: r["wall"] for r in runs[2 * i: 2 * i + 2]}
        per_round.append(pair["runsc"] / pair["runc"])
    steps = sorted(by["runc"][0]["durations"], key=lambda s: -median(r["durations"].get(s) for r in by["runc"]))
    res = {"rounds": rounds, "workers": workers, "concurrency": concurrency, "median_wall": med,
           "ratio": med["runsc"] / med["runc"], "per_round_ratio": per_round,
           "job_seconds": {rt: median(r["job_seconds"] for r in by[rt]) for rt in RUNTIMES},
           "light_job_seconds": {rt: median(sum(r["durations"].get(s) or 0 for s in steps[8:]) for r in by[rt])
                                 for rt in RUNTIMES},
           "heavy_steps": [(s, median(r["durations"].get(s) for r in by["runc"]),
                            median(r["durations"].get(s) for r in by["runsc"])) for s in steps[:8]],
           "runs": [{k: v for k, v in r.items() if k not in ("records", "rss_series", "stdout")}
                    for r in runs]}
    log("probes: container start, imports, page faults ...")
    res["probes"] = probes(n_probes)
    res["n_probes"] = n_probes
    write_json(RUNS / "runsc" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def _f(x, nd=2) -> str:
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def markdown(res: dict) -> str:
    ok = res["ratio"] <= GOAL
    L = [f"Gold dev run (50 steps, reference endpoint, regenerated dev targets), `--sandbox docker "
         f"--eval-threads {res['workers']} --concurrent-requests {res['concurrency']}`, "
         f"`--sandbox-runtime` runc vs runsc (gVisor 20221219, ptrace platform), {res['rounds']} "
         "alternated round(s), fresh output directory each run, warm pool on (as in every run).", "",
         "| run | runtime | wall (s) | summed job time (s) | verdicts | 1-min load (mean) |",
         "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        L.append(f"| {r['cmd'][r['cmd'].index('--output-dir') + 1].split('/')[-1]} | {r['runtime']} | "
                 f"{r['wall']:.1f} | {r['job_seconds']:.1f} | {fmt_counts(r['counts'])} | "
                 f"{r['load']['load_mean']:.2f} |")
    L += ["", f"**runsc/runc wall-time ratio (medians): {res['ratio']:.2f}** (goal <= {GOAL}: "
          f"{'meets' if ok else '**misses**'}); per round: "
          f"{', '.join(f'{x:.2f}' for x in res['per_round_ratio'])}.", "",
          "Where the time goes (medians):", "",
          "| | runc | runsc | runsc/runc |", "|---|---|---|---|"]

    def row(name, a, b, nd=2):
        L.append(f"| {name} | {_f(a, nd)} | {_f(b, nd)} | {_f(b / a if a and b else None)} |")
    row("wall time (s)", res["median_wall"]["runc"], res["median_wall"]["runsc"], 1)
    row("summed in-sandbox job time (s)", res["job_seconds"]["runc"], res["job_seconds"]["runsc"], 1)
    row("of which the 42 lightest steps (s)", res["light_job_seconds"]["runc"],
        res["light_job_seconds"]["runsc"], 1)
    p = res["probes"]
    row(f"cold container start + `pass` + remove (s), median of {res['n_probes']}",
        p["runc"]["start"], p["runsc"]["start"])
    row("`import numpy, scipy` in a started container (s)", p["runc"]["imports"], p["runsc"]["imports"])
    row("touching 512 MB of fresh pages (s)", p["runc"]["faults"], p["runsc"]["faults"])
    L += ["", "Heaviest steps, job duration (s), runc vs runsc:", "",
          "| step | runc | runsc | ratio |", "|---|---|---|---|"]
    for s, a, b in res["heavy_steps"]:
        L.append(f"| {s} | {_f(a)} | {_f(b)} | {_f(b / a if a and b else None)} |")
    return "\n".join(L)


def write_section(md: str, path: Path = BENCH / "RESULTS.md") -> None:
    block = f"{BEGIN}\n## Issue 14: gVisor (runsc) against runc (`bench/runsc_overhead.py`)\n\n" \
            f"_Measured {time.strftime('%Y-%m-%d %H:%M %Z')}, in its own invocation._\n\n{md}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda m: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="put the section into bench/RESULTS.md")
    a = ap.parse_args(argv)
    res = run(a.rounds, a.workers, a.concurrency, a.probes)
    print(res["markdown"])
    if a.write:
        write_section(res["markdown"])


if __name__ == "__main__":
    main()
