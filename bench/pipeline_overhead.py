"""Goal 1 -- sandbox overhead on a real run: the gold dev run, `--sandbox docker`
against `--sandbox process`, same workers, alternated runs.

    python bench/pipeline_overhead.py [--rounds 2] [--workers 2] [--concurrency 16]

Each run is the whole `scicode_eval --split dev` command against the built-in
reference endpoint (gold code) with the regenerated dev targets, from a fresh
output directory (no cached generations or verdicts). Rounds alternate the order
(D P, P D, ...) so drifting machine load hits both backends alike. Reported: wall
time per run, the docker/process ratio of the medians (goal <= 1.05), and where
the time goes: the summed in-sandbox job time, the time outside jobs, per-step
durations of the heaviest steps, and the cost of the sandbox's own machinery
(dockerd/containerd CPU).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (LoadSampler, counts, ensure_history, fmt_counts, fmt_mb, fresh_dir, log, median, reference_server,  # noqa: E402
                     run_eval, write_json, RUNS)

GOAL = 1.05


def _daemon_cpu() -> float:
    """CPU seconds used so far by dockerd and containerd themselves (the per-container
    shims and runc come and go with their containers and are not counted)."""
    import psutil
    tot = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if (p.info["name"] or "") in ("dockerd", "containerd") and p.info["cpu_times"]:
            tot += p.info["cpu_times"].user + p.info["cpu_times"].system
    return tot


def _containers_cpu() -> float | None:
    """CPU seconds charged so far to the `/docker` cgroup (every container's processes;
    cgroup v1 with the cgroupfs driver), or None where that file does not exist."""
    try:
        return int(Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return None


def _others() -> int:
    """Running containers (called just before and after a run, when it has none of its own)."""
    try:
        import docker
        c = docker.from_env(timeout=30)
        n = len(c.containers.list())
        c.close()
        return n
    except Exception:  # noqa: BLE001
        return -1


def one_run(url: str, backend: str, workers: int, concurrency: int, tag: str) -> dict:
    out = fresh_dir(f"overhead/{tag}")
    args = ["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox", backend,
            "--eval-threads", str(workers), "--concurrent-requests", str(concurrency)]
    d0, c0, o0 = _daemon_cpu(), _containers_cpu(), _others()
    with LoadSampler() as load:
        r = run_eval(args, out)
    r["daemon_cpu"] = _daemon_cpu() - d0
    c1 = _containers_cpu()
    r["others"] = max(o0, _others())
    # CPU the jobs got: containers' cgroup for docker (exact when no other container ran),
    # the harness's waited children for process (its jobs) minus nothing (harness CPU is small)
    r["jobs_cpu"] = ((c1 - c0) if backend == "docker" and c0 is not None and c1 is not None
                     else r.get("cpu") if backend == "process" else None)
    r["load"] = load.summary()
    r["backend"] = backend
    c = counts(r["records"])
    r["counts"] = c
    if r["rc"] != 0 or c.get("pass", 0) != 50:
        log(f"{tag}: rc={r['rc']} counts={c}\n{r['stderr'][-2000:]}")
    r["job_seconds"] = sum(x.get("duration", 0.0) for x in r["records"])
    r["cpu_share"] = (r["jobs_cpu"] / r["job_seconds"]) if r.get("jobs_cpu") and r["job_seconds"] else None
    r["durations"] = {x["step_id"]: x.get("duration") for x in r["records"]}
    log(f"{tag}: {backend} wall {r['wall']:.1f}s, jobs {r['job_seconds']:.1f}s, "
        f"load {r['load']['load_mean']:.1f}, counts {c}")
    return r


def run(rounds: int = 2, workers: int = 2, concurrency: int = 16) -> dict:
    ensure_history(workers)   # every timed run starts from the same schedule
    runs = []
    with reference_server("gold") as url:
        for i in range(rounds):
            order = ("docker", "process") if i % 2 == 0 else ("process", "docker")
            for b in order:
                runs.append(one_run(url, b, workers, concurrency, f"r{i + 1}-{b}"))
    by = {b: [r for r in runs if r["backend"] == b] for b in ("docker", "process")}
    med = {b: median(r["wall"] for r in rs) for b, rs in by.items()}
    per_round = []
    for i in range(rounds):
        d = next(r for r in runs[2 * i: 2 * i + 2] if r["backend"] == "docker")
        p = next(r for r in runs[2 * i: 2 * i + 2] if r["backend"] == "process")
        per_round.append(d["wall"] / p["wall"])
    res = {"rounds": rounds, "workers": workers, "concurrency": concurrency,
           "median_wall": med, "ratio": med["docker"] / med["process"], "per_round_ratio": per_round,
           "runs": [{k: v for k, v in r.items() if k not in ("records", "rss_series", "stdout")}
                    for r in runs]}
    steps = sorted(by["process"][0]["durations"], key=lambda s: -median(r["durations"].get(s) for r in by["process"]))
    res["heavy_steps"] = [(s, median(r["durations"].get(s) for r in by["docker"]),
                           median(r["durations"].get(s) for r in by["process"])) for s in steps[:8]]
    light = steps[8:]
    res["light_steps_job_s"] = {b: median(sum(r["durations"].get(s) or 0 for s in light) for r in by[b])
                                for b in by}
    res["job_seconds"] = {b: median(r["job_seconds"] for r in by[b]) for b in by}
    res["daemon_cpu"] = {b: median(r["daemon_cpu"] for r in by[b]) for b in by}
    res["peak_rss_docker"] = max(r["maxrss_wait4"] or r["peak_rss_root"] for r in by["docker"])
    write_json(RUNS / "overhead" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def _f(x, nd=1) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def markdown(res: dict) -> str:
    L = [f"Gold dev run (50 steps, reference endpoint, regenerated dev targets), "
         f"`--eval-threads {res['workers']} --concurrent-requests {res['concurrency']}`, "
         f"{res['rounds']} alternated round(s), fresh output directory each run.", "",
         "| run | backend | wall (s) | summed job time (s) | CPU the jobs got (s) | CPU per job-second | "
         "dockerd+containerd CPU (s) | verdicts | 1-min load (mean) | host CPU busy | other containers |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        c = fmt_counts(r["counts"])
        L.append(f"| {r['cmd'][r['cmd'].index('--output-dir') + 1].split('/')[-1]} | {r['backend']} | "
                 f"{r['wall']:.1f} | {r['job_seconds']:.1f} | {_f(r.get('jobs_cpu'))} | "
                 f"{_f(r.get('cpu_share'), 2)} | {r['daemon_cpu']:.1f} | {c} | "
                 f"{r['load']['load_mean']:.2f} | {100 * (r['load']['host_busy'] or 0):.0f}% | {r.get('others')} |")
    ok = "meets" if res["ratio"] <= GOAL else "misses"
    L += ["", f"**docker/process wall-time ratio (medians): {res['ratio']:.2f}** "
              f"(goal <= {GOAL}: {ok}); per round: "
              + ", ".join(f"{x:.2f}" for x in res["per_round_ratio"]) + ".", "",
          "Where the time goes (medians over the runs of each backend):", "",
          "| | docker | process |", "|---|---|---|",
          f"| wall time (s) | {res['median_wall']['docker']:.1f} | {res['median_wall']['process']:.1f} |",
          f"| summed in-sandbox job time (s) | {res['job_seconds']['docker']:.1f} | "
          f"{res['job_seconds']['process']:.1f} |",
          f"| of which the 42 lightest steps (s) | {res['light_steps_job_s']['docker']:.1f} | "
          f"{res['light_steps_job_s']['process']:.1f} |",
          f"| dockerd + containerd CPU during the run (s) | {res['daemon_cpu']['docker']:.1f} | "
          f"{res['daemon_cpu']['process']:.1f} |"]
    L += ["", "Heaviest steps, job duration (s), docker vs process:", "",
          "| step | docker | process | ratio |", "|---|---|---|---|"]
    for s, d, p in res["heavy_steps"]:
        L.append(f"| {s} | {d:.2f} | {p:.2f} | {d / p:.2f} |")
    L += ["", "CPU the jobs got: for docker, the `/docker` cgroup's CPU during the run (all containers: exact "
              "only when no other container ran); for process, the CPU of the harness's waited children "
              "(its jobs) plus the harness's own (~2 s). CPU per job-second below 1 means jobs waited for a "
              "CPU (contention); the two backends' figures differ also because the interpreters and numpy "
              "differ (see the notes at the end).",
          "", f"Harness peak RSS in the docker runs: {fmt_mb(res['peak_rss_docker'])} MB."]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args(argv)
    t = time.monotonic()
    res = run(a.rounds, a.workers, a.concurrency)
    print(res["markdown"])
    log(f"pipeline_overhead took {time.monotonic() - t:.0f}s")


if __name__ == "__main__":
    main()
