"""Run every benchmark and write bench/RESULTS.md (`make bench`).

    python bench/run_all.py [--only overhead,pipeline,nvidia,generation,memory] [--rounds N]

Sections (see bench/README.md):
  overhead    issue 3: trivial jobs/s, docker cold / warm pool / process (bench/sandbox_overhead.py)
  pipeline    goal 1: gold dev run, --sandbox docker vs process, alternated
  nvidia      goal 2: nvidia-scicode's test_code vs our sandboxed execution of the same candidates
  generation  goal 3: fake endpoint with fixed latency, n-samples 3, wall vs critical path
  memory      goal 4: the harness's peak RSS over an n-samples-3 run
  runsc       issue 14: gold dev run, --sandbox-runtime runsc vs runc, alternated; where the time goes
  envs        issue 19: --sandbox-envs 2024,2025 vs 2024 on gold and all-wrong dev answers; gold under 2025

Figures are ratios within this one run and medians of repeats; the repeat counts
are kept low so the whole run stays under ~20 minutes on a 2-core machine (stated
in RESULTS.md). Nothing here asserts on timings. Scratch output goes to bench/_runs/
(gitignored), including the NVIDIA venv, made on the first run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (BENCH, RUNS, external_load, fmt_mb, image_versions, log, machine_info,  # noqa: E402
                     machine_table, pure_python_speed, write_json)

SECTIONS = ("overhead", "pipeline", "nvidia", "generation", "memory", "runsc", "envs")


def section_overhead(a) -> dict:
    cmd = [sys.executable, str(BENCH / "sandbox_overhead.py"), "--jobs", str(a.overhead_jobs),
           "--rounds", str(a.overhead_rounds)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"sandbox_overhead.py failed ({p.returncode}): {p.stderr[-1500:]}")
    return {"markdown": p.stdout.strip(), "cmd": " ".join(cmd[1:])}


def section_pipeline(a) -> dict:
    import pipeline_overhead
    return pipeline_overhead.run(rounds=a.rounds, workers=a.workers, concurrency=16)


def section_runsc(a) -> dict:
    import runsc_overhead
    return runsc_overhead.run(rounds=a.rounds, workers=a.workers, concurrency=16)


def section_envs(a) -> dict:
    import envs_overhead
    return envs_overhead.run(rounds=a.rounds, workers=a.workers, concurrency=16)


def section_nvidia(a) -> dict:
    import vs_nvidia
    return vs_nvidia.run(workers=a.workers, rounds=a.nvidia_rounds)


def section_generation(a) -> dict:
    import generation
    return generation.run(latency=a.latency, concurrencies=(45, 16), n_samples=3, workers=a.workers)


def section_memory(a, results: dict) -> dict:
    import memory
    extra = []
    gen = results.get("generation") or {}
    for r in gen.get("runs", []):
        extra.append({"what": f"goal 3 run: dev, --n-samples 3, latency {gen['latency']:g} s, "
                              f"--concurrent-requests {r['concurrency']}, docker",
                      "peak": max(r.get("maxrss_wait4") or 0, r["peak_rss_root"]), "sampled": r["peak_rss_root"],
                      "wall": r["wall"], "counts": r["counts"]})
    pipe = results.get("pipeline") or {}
    for r in pipe.get("runs", []):
        if r["backend"] == "docker":
            extra.append({"what": "goal 1 run: gold dev, --n-samples 1, docker (real outputs)",
                          "peak": max(r.get("maxrss_wait4") or 0, r["peak_rss_root"]),
                          "sampled": r["peak_rss_root"], "wall": r["wall"], "counts": r["counts"]})
    return memory.run(n_samples=3, workers=a.workers, extra=extra)


def summary_rows(res: dict) -> list[str]:
    rows = ["| goal | figure | target | |", "|---|---|---|---|"]

    def st(ok):
        return "meets" if ok else "**misses**"
    p = res.get("pipeline")
    if p and "ratio" in p:
        rows.append(f"| 1. docker / process wall time, gold dev run | {p['ratio']:.2f} | <= 1.05 | "
                    f"{st(p['ratio'] <= 1.05)} |")
    n = res.get("nvidia")
    if n and "ratio" in n:
        exp = all(d["mode"] == "exit" and d["nvidia"] == "pass" for d in n["compare"]["diff"])
        rows.append(f"| 2. ours / NVIDIA test_code wall time, gold-run candidates (all candidates: {n['ratio_all']:.2f}) | {n['ratio']:.2f} | <= 0.8 | {st(n['ratio'] <= 0.8)} |")
        rows.append(f"| 2. same verdict except NVIDIA's documented bugs | {n['compare']['same']}/{n['n']} same; "
                    f"{len(n['compare']['diff'])} differ, {'all' if exp else 'not all'} from the exit-status bug | "
                    f"only documented bugs differ | {st(exp)} |")
    g = res.get("generation")
    if g and g.get("runs"):
        best = min(r["wall"] for r in g["runs"]) / g["critical_path"]
        rows.append(f"| 3. wall / critical path, n-samples 3, L = {g['latency']:g} s | {best:.2f} | <= 1.2 | "
                    f"{st(best <= 1.2)} |")
    m = res.get("memory")
    if m and "peak" in m:
        rows.append(f"| 4. harness peak RSS, n-samples 3 | {fmt_mb(m['peak'])} MB | < 300 MB | "
                    f"{st(m['peak'] < 300 * 2**20)} |")
    return rows


def notes(info: dict, speed: dict, ext: dict) -> str:
    hp, ip = speed.get("harness_python"), speed.get("image_python")
    sp = (f"the same pure-Python loop takes {hp:.2f} CPU-s in the harness's interpreter "
          f"({info.get('python')}, used by the process backend) and {ip:.2f} CPU-s in the image's "
          f"({info.get('image_python')}): ratio {hp / ip:.2f}") if hp and ip else "interpreter speed not measured"
    return "\n".join([
        "- **The two backends do not run the same interpreter or libraries.** The process backend runs jobs "
        f"with the harness's own Python and numpy/scipy ({info.get('host_numpy')}/{info.get('host_scipy')}); "
        f"the image has {info.get('image_numpy')}/{info.get('image_scipy')}. Measured in this run: {sp}. "
        "Goal 1 compares the backends as shipped, so this is part of the ratio (it favours Docker on "
        "pure-Python-heavy steps such as 51.4).",
        "- **Shared host.** With the cgroupfs driver (cgroup v1) every container sits under the one `/docker` "
        "cgroup, which competes for CPU as a single group against each host process; a process-backend job "
        "competes as one more host process. On an idle machine this is invisible; when other containers or "
        "host processes keep the CPUs busy, the Docker runs' CPU share moves with *where* that load lives, "
        "in either direction (see bench/README.md). Host CPU busy with nothing of ours running, just before "
        f"the benchmarks: {100 * ext.get('busy', 0):.0f}% (1-min load {ext.get('load1', 0):.2f}, "
        f"{ext.get('containers')} other container(s) running). Compare each run's load column: figures taken "
        "under load are upper bounds for the overhead.",
        "- **Job durations** are measured by each backend from payload sent to report received; "
        "summed over jobs they exceed the wall time because 2 run at once.",
        "- Raw data of every run: `bench/_runs/*/summary.json` and each run's output directory.",
    ])


def write_results(info, speed, ext, res, errors, times, a, total) -> Path:
    L = ["# Benchmark results", "",
         f"Written by `make bench` (`bench/run_all.py`) on {time.strftime('%Y-%m-%d %H:%M %Z')} in "
         f"{total / 60:.1f} min. Every figure is a ratio of runs made in this one invocation; repeated "
         "figures are medians. Repeats are reduced to fit ~20 minutes on this 2-core machine: "
         f"goal 1 {a.rounds} alternated round(s) per backend, goal 2 {a.nvidia_rounds} round(s), goal 3 "
         f"one run per concurrency, goal 4 one run, sandbox_overhead.py {a.overhead_rounds} round(s) of "
         f"{a.overhead_jobs} jobs. Rerun on an idle machine for tighter figures; see bench/README.md for "
         "methods.", "", "## Machine", "", machine_table(info), "", "## Goals (issue 7)", "",
         *summary_rows(res), ""]
    titles = {"pipeline": "1. Sandbox overhead on the gold dev run (`bench/pipeline_overhead.py`)",
              "nvidia": "2. Against NVIDIA's procedure (`bench/vs_nvidia.py`)",
              "generation": "3. Generation against the critical path (`bench/generation.py`)",
              "memory": "4. Harness memory (`bench/memory.py`)",
              "overhead": "Issue 3: sandbox overhead on a trivial job (`bench/sandbox_overhead.py`)",
              "runsc": "Issue 14: gVisor (runsc) against runc (`bench/runsc_overhead.py`)",
              "envs": "Issue 19: a second sandbox environment (`bench/envs_overhead.py`)"}
    for s in ("pipeline", "nvidia", "generation", "memory", "overhead", "runsc", "envs"):
        if s not in res and s not in errors:
            continue
        L += [f"## {titles[s]}", ""]
        if s in errors:
            L += ["Failed in this run:", "", "```", errors[s][-2000:], "```", ""]
        else:
            L += [res[s]["markdown"], "", f"_Section time: {times[s] / 60:.1f} min._", ""]
    L += ["## Reading these figures", "", notes(info, speed, ext), ""]
    out = BENCH / "RESULTS.md"
    out.write_text("\n".join(L))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--workers", type=int, default=2, help="sandbox workers (eval threads) everywhere")
    ap.add_argument("--rounds", type=int, default=2, help="goal 1: alternated rounds per backend")
    ap.add_argument("--nvidia-rounds", type=int, default=1)
    ap.add_argument("--latency", type=float, default=5.0, help="goal 3: seconds per request")
    ap.add_argument("--overhead-jobs", type=int, default=30)
    ap.add_argument("--overhead-rounds", type=int, default=2)
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    t0 = time.monotonic()
    RUNS.mkdir(parents=True, exist_ok=True)
    ext = external_load()
    info = machine_info()
    info.update(image_versions())
    speed = pure_python_speed()
    log(f"machine: {info}; idle probe {ext}; speed {speed}")
    res, errors, times = {}, {}, {}
    for s in SECTIONS:
        if s not in only:
            continue
        log(f"section {s} ...")
        t = time.monotonic()
        try:
            if s == "memory":
                res[s] = section_memory(a, res)
            else:
                res[s] = globals()[f"section_{s}"](a)
        except BaseException as exc:  # noqa: BLE001 - keep going, report the failure
            if isinstance(exc, KeyboardInterrupt):
                raise
            errors[s] = traceback.format_exc()
            log(f"section {s} failed: {exc}")
        times[s] = time.monotonic() - t
        log(f"section {s} done in {times[s]:.0f}s")
    total = time.monotonic() - t0
    out = write_results(info, speed, ext, res, errors, times, a, total)
    write_json(RUNS / "run_all.json", {"info": info, "speed": speed, "external": ext, "times": times,
                                       "errors": errors,
                                       "results": {k: {kk: vv for kk, vv in v.items() if kk != "markdown"}
                                                   for k, v in res.items()}})
    log(f"wrote {out} ({total / 60:.1f} min)")
    print(out.read_text())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
