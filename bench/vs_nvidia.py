"""Goal 2 -- against NVIDIA's procedure: nvidia-scicode 26.3's `test_code` against our
sandboxed execution of the same candidates with the same targets.

    python bench/vs_nvidia.py [--workers 2] [--rounds 1] [--modes gold,wrong,exit,raise]

* NVIDIA's side runs in its own venv (bench/_runs/nv-venv, made on first use:
  `nvidia-scicode==26.3` with numpy/scipy/h5py/sympy/matplotlib at the sandbox image's
  versions, so both sides compute with the same libraries). Its `test_code` writes one
  script per candidate and runs each with `python` from PATH (that venv's), unsandboxed,
  `eval_threads` at a time; every script imports scicode.parse.parse (h5py, scipy,
  sympy) and opens the h5 file to read its step's targets. Its parse.py locates the
  file as `Path($DATA_CACHE_DIR) / "test_data.h5"` at import time, so DATA_CACHE_DIR
  points at a directory whose test_data.h5 links to our regenerated dev targets.
  Timed: the `test_code(...)` call (script assembly, execution, scoring), inside
  the venv's interpreter, after its imports.
* Our side: the same candidates as Jobs (targets read from the same h5 file on the
  host, only that step's, encoded into the job) through the Docker backend with the
  same number of workers, the pipeline's default limits and the warm pool. Timed:
  opening the backend (image check, sweep, warm pool start) to closing it (every
  container removed).
* Candidates: for each mode, what the reference endpoint answers for each of the 50
  dev steps, with the chain made of the same mode's earlier answers (exactly what
  `scicode_eval` would test): gold (passes), wrong (return values perturbed: fails),
  exit (gold code then exit(0) / raise SystemExit(0) / os._exit(0) at module level)
  and raise (gold code then a RuntimeError at module level). By default `wrong` skips
  the 8 heaviest steps (their run time is the same computation as gold on both sides;
  --wrong-all includes them).
* NVIDIA's side runs the candidates in its own order (see nv_order); ours submits
  them in that order to the pipeline's priority pool, which starts the longest
  expected step first (harness.run.schedule; the history comes from earlier runs or
  `targets build`). `--fifo` keeps NVIDIA's order on our side too.
* Two groups are timed separately, each NVIDIA vs ours: the gold run's candidates
  (what `scicode_eval` generates against the reference endpoint: the headline
  figure) and the failing answers (wrong, exit, raise). RESULTS.md shows both and
  their sum.
* Verdict equality is pass / not-pass per candidate (NVIDIA has no other verdicts);
  the expected differences are NVIDIA's documented bug "pass means exit code 0"
  (upstream bug E in ../shared/research/scicode_benchmark.md): every `exit` candidate
  is a false pass there.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RUNS, LoadSampler, ensure_history, fresh_dir, log, median, write_json  # noqa: E402

NV_VERSION = "26.3"
NV_VENV = RUNS / "nv-venv"
MODEL = "bench-model"
HEAVY = ("51.4", "47.4", "10.11", "7.1", "49.4", "6.1", "78.3", "44.3")   # > 3 s each (gold)
MODES = ("gold", "wrong", "exit", "raise")
RAISE_LINE = "raise RuntimeError('bench: module-level error')"
NV_DRIVER = r'''
import json, sys, time
from scicode.__main__ import test_code
cfg = json.loads(sys.argv[1])
with open(cfg["problems"], encoding="utf-8") as fh:
    problems = [json.loads(line) for line in fh if line.strip()]
t = time.monotonic()
test_code(cfg["model"], cfg["code_dir"], cfg["log_dir"], cfg["output_dir"], problems,
          with_background=False, n_samples=cfg["n_samples"], eval_threads=cfg["workers"])
print("NVTIME", time.monotonic() - t, flush=True)
'''


# ------------------------------------------------------------------------ the NVIDIA venv
def nv_base_python() -> str:
    """The interpreter for NVIDIA's venv: $BENCH_NV_PYTHON, else the system's python3
    (on Debian bookworm the same CPython build as the sandbox image's), else ours."""
    for cand in (os.environ.get("BENCH_NV_PYTHON"), "/usr/bin/python3"):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0
            if ok:
                return cand
    return sys.executable


def ensure_nv_venv() -> Path:
    py = NV_VENV / "bin" / "python"
    stamp = NV_VENV / ".bench-ok"
    base = nv_base_python()
    from harness.build import image as himage
    pins = himage.lock_versions()
    pkgs = [f"nvidia-scicode=={NV_VERSION}"] + [f"{n}=={pins[n]}" for n in
                                               ("numpy", "scipy", "h5py", "sympy", "matplotlib") if n in pins]
    want = f"{base} {' '.join(pkgs)}"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    log(f"creating {NV_VENV} from {base} with {' '.join(pkgs)} (first run only, ~1-2 min)")
    shutil.rmtree(NV_VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(NV_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pkgs], check=True)
    stamp.write_text(want + "\n")
    return py


def nv_versions(py: Path) -> str:
    out = subprocess.run([str(py), "-c", "import sys, numpy, scipy, importlib.metadata as m; "
                          "print(sys.version.split()[0], numpy.__version__, scipy.__version__, "
                          "m.version('nvidia-scicode'))"], capture_output=True, text=True)
    return out.stdout.strip()


def nv_script_overhead(py: Path, data: Path, reps: int = 3) -> float:
    """Seconds for one of NVIDIA's step scripts doing nothing but its fixed part: start
    `python`, import scicode.parse.parse, read one small step's targets (median)."""
    code = ("from scicode.parse.parse import process_hdf5_to_tuple\n"
            "process_hdf5_to_tuple('1.1', 3)\n")
    env = dict(os.environ, DATA_CACHE_DIR=str(data))
    ts = []
    for _ in range(reps):
        t = time.monotonic()
        subprocess.run([str(py), "-c", code], env=env, capture_output=True, check=True)
        ts.append(time.monotonic() - t)
    return median(ts)


# ------------------------------------------------------------------------ candidates
def candidates(modes, wrong_all: bool) -> list[dict]:
    """[{mode, sample, problem, index, step_id, code, chain}] as scicode_eval would test them."""
    from harness.data import dataset
    from harness.run import prompts
    from harness.reference import StepIndex, answer_for
    problems = dataset.load_problems("dev")
    index = StepIndex(problems)
    out = []
    for sample, mode in enumerate(modes):
        variant = 0
        for p in problems:
            codes: list[str] = []
            for i, s in enumerate(p["sub_steps"]):
                entry = index.by_id[s["step_number"]]
                reply = answer_for(entry, "gold" if mode == "raise" else mode, variant)
                variant += 1
                code = prompts.extract_code(reply)
                if mode == "raise":
                    code = code.rstrip() + "\n\n" + RAISE_LINE + "\n"
                if not (mode == "wrong" and not wrong_all and s["step_number"] in HEAVY):
                    out.append({"mode": mode, "sample": sample, "problem": p, "index": i,
                                "step_id": s["step_number"], "code": code, "chain": list(codes)})
                codes.append(code)
    return out


# ------------------------------------------------------------------------ NVIDIA's side
def nv_order(cands: list[dict], tag: str) -> list[dict]:
    """The candidates in the order NVIDIA's test_code runs them. It lists its code
    directory, writes one script per file into a fresh tmp directory in that order,
    lists that directory and maps over the listing, FIFO. Directory order is decided
    by the filesystem; the same names written in the same order into fresh
    directories on the same filesystem list the same way, so this replays it."""
    base = fresh_dir(f"vs_nvidia/{tag}-order")
    code = base / "code"
    code.mkdir()
    by_name = {}
    for c in cands:
        name = f"{c['problem']['problem_id']}.{c['index'] + 1}_{c['sample']}.py"
        (code / name).write_text("")
        by_name[name] = c
    tmp = base / "tmp"
    tmp.mkdir()
    scripts = {}
    for f in code.iterdir():
        c = by_name[f.name]
        script = f"{c['step_id']}_{c['sample']}.py"
        (tmp / script).write_text("")
        scripts[script] = c
    order = [scripts[f.name] for f in tmp.iterdir()]
    shutil.rmtree(base, ignore_errors=True)
    return order


def run_nvidia(py: Path, cands: list[dict], workers: int, targets: Path, tag: str) -> dict:
    from harness.run import candidate
    base = fresh_dir(f"vs_nvidia/{tag}-nv")
    code_dir = base / "generated_code"
    d = code_dir / MODEL / "without_background"
    d.mkdir(parents=True)
    for c in cands:   # NVIDIA's saved file: dependencies, earlier steps' code, this step's code
        p = c["problem"]
        (d / f"{p['problem_id']}.{c['index'] + 1}_{c['sample']}.py").write_text(
            candidate.program(p["required_dependencies"], c["chain"], c["code"]), encoding="utf-8")
    data = base / "data"
    data.mkdir()
    os.symlink(targets, data / "test_data.h5")
    problems = base / "problems_dev.jsonl"
    from harness.data import dataset
    problems.write_text("".join(json.dumps(p) + "\n" for p in dataset.load_problems("dev")), encoding="utf-8")
    work = base / "cwd"
    work.mkdir()
    cfg = {"model": MODEL, "code_dir": str(code_dir), "log_dir": str(base / "logs"),
           "output_dir": str(base / "out"), "problems": str(problems), "workers": workers,
           "n_samples": 1 + max(c["sample"] for c in cands)}
    # `python` on PATH: a tiny wrapper that runs the venv's python and logs each script's
    # start, end and exit status (bash adds ~2 ms per script), so per-candidate times compare
    wrap = base / "bin"
    wrap.mkdir()
    timelog = base / "script_times.txt"
    (wrap / "python").write_text(
        "#!/bin/bash\n"
        f"t0=$(date +%s.%N); '{py}' \"$@\"; rc=$?\n"
        f"echo \"$1 $t0 $(date +%s.%N) $rc\" >> '{timelog}'\nexit $rc\n")
    (wrap / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(DATA_CACHE_DIR=str(data), PATH=f"{wrap}:{py.parent}:{env.get('PATH', '/usr/bin:/bin')}")
    t0 = time.monotonic()
    with LoadSampler() as load:
        p = subprocess.run([str(py), "-c", NV_DRIVER, json.dumps(cfg)], cwd=work, env=env,
                           capture_output=True, text=True)
    outer = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"NVIDIA test_code failed ({p.returncode}):\n{p.stderr[-3000:]}")
    inner = float(next(ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("NVTIME")))
    logs = base / "logs" / MODEL / "without_background"
    verdicts = {}
    for c in cands:
        f = logs / f"{c['step_id']}_{c['sample']}.txt"
        verdicts[(c["sample"], c["step_id"])] = f.read_text().strip() if f.exists() else "missing"
    (base / "stdout.txt").write_text(p.stdout)
    durations = {}
    if timelog.exists():
        for ln in timelog.read_text().splitlines():
            parts = ln.split()
            if len(parts) == 4:
                step, _, sample = Path(parts[0]).stem.rpartition("_")
                durations[(int(sample), step)] = float(parts[2]) - float(parts[1])
    return {"durations": durations, "script_seconds": sum(durations.values()), "wall": inner, "wall_with_imports": outer, "verdicts": verdicts, "load": load.summary(),
            "script_overhead": nv_script_overhead(py, data)}


# ------------------------------------------------------------------------ our side
def run_ours(cands: list[dict], workers: int, targets: Path, tag: str, backend: str = "docker",
             fifo: bool = False) -> dict:
    """Our execution as `scicode_eval` does it: the pipeline's priority pool, longest
    expected step first by the step-duration history in the harness cache (what any
    earlier run or `targets build` left there; read, never written here), else FIFO."""
    from harness.run import candidate
    from harness.data import h5targets
    from harness.sandbox import Limits
    from harness.sandbox.registry import get_backend
    from harness.run.schedule import History, JobQueue
    lock = threading.Lock()
    limits = Limits()           # the pipeline's defaults: 1800 s, 4g, 1 CPU
    history = History()
    known = sum(history.expect(c["step_id"]) is not None for c in cands)

    def one(c):
        p = c["problem"]
        step = p["sub_steps"][c["index"]]
        with lock:   # as the pipeline: one h5 reader at a time
            tg = h5targets.read_step_targets(targets, c["step_id"], len(step["test_cases"]))
        cand = candidate.Candidate(p["problem_id"], c["step_id"], c["index"], c["sample"], c["code"], c["chain"])
        job = candidate.build_job(cand, p, tg, limits)
        del tg
        o = queue.run(job, c["step_id"])
        status, _ = candidate.verdict(o, len(step["test_cases"]))
        return (c["sample"], c["step_id"]), status, o.duration

    t0 = time.monotonic()
    with LoadSampler() as load:
        be = get_backend(backend, workers=workers, limits=limits)
        try:
            queue = JobQueue(be, workers, len(cands), name="bench", history=history, fifo=fifo)
            t_open = time.monotonic() - t0
            with queue:   # the history is read, never written: nothing is recorded
                futs = [queue.submit(c["step_id"], one, c) for c in cands]
                res = [f.result() for f in futs]
        finally:
            t1 = time.monotonic()
            be.close()
            t_close = time.monotonic() - t1
    wall = time.monotonic() - t0
    return {"wall": wall, "open": t_open, "close": t_close, "verdicts": {k: v for k, v, _ in res},
            "durations": {k: d for k, _, d in res}, "history_known": 0 if fifo else known,
            "job_seconds": sum(d for _, _, d in res), "load": load.summary()}


# ------------------------------------------------------------------------ compare
def _per_candidate(cands, nv: dict, ours: dict) -> list:
    """[(step, mode, NVIDIA script seconds, our job seconds)], slowest first."""
    rows = [(c["step_id"], c["mode"], nv.get((c["sample"], c["step_id"])), ours.get((c["sample"], c["step_id"])))
            for c in cands]
    return sorted(rows, key=lambda r: -(r[2] or 0))


def compare(cands, nv: dict, ours: dict) -> dict:
    same, diff = 0, []
    for c in cands:
        k = (c["sample"], c["step_id"])
        a, b = nv[k], ours[k]
        if (a == "pass") == (b == "pass"):
            same += 1
        else:
            diff.append({"mode": c["mode"], "step": c["step_id"], "nvidia": a, "ours": b})
    return {"same": same, "diff": diff}


GROUPS = (("gold run", ("gold",)), ("failing answers", ("wrong", "exit", "raise")))


def run(workers: int = 2, rounds: int = 1, modes=MODES, wrong_all: bool = False, fifo: bool = False) -> dict:
    """Time each group of candidates separately (the gold run's code; the failing
    answers), NVIDIA and ours alternated per round; compare verdicts over all."""
    from harness.util.paths import targets_path
    targets = targets_path("dev")
    if not targets.is_file():
        raise SystemExit(f"dev targets not found at {targets}: scicode-harness targets build --split dev")
    py = ensure_nv_venv()
    if not fifo:
        ensure_history(workers)
    cands = candidates(list(modes), wrong_all)
    log(f"vs_nvidia: {len(cands)} candidates, {workers} workers, {rounds} round(s)")
    groups = []
    nv_verdicts, our_verdicts = {}, {}
    stable_nv = stable_ours = True
    for gname, gmodes in GROUPS:
        sub = [c for c in cands if c["mode"] in gmodes]
        if not sub:
            continue
        sub = nv_order(sub, gname.split()[0])   # NVIDIA's order; ours reorders by expected duration
        nvs, ours = [], []
        for r in range(rounds):
            order = ("nv", "ours") if r % 2 == 0 else ("ours", "nv")
            for side in order:
                tag = f"{gname.split()[0]}-r{r + 1}"
                if side == "nv":
                    nvs.append(run_nvidia(py, sub, workers, targets, tag))
                    log(f"  {gname}: NVIDIA test_code {nvs[-1]['wall']:.1f}s")
                else:
                    ours.append(run_ours(sub, workers, targets, tag, fifo=fifo))
                    log(f"  {gname}: ours (docker) {ours[-1]['wall']:.1f}s")
        fifo_wall = None
        if not fifo and gmodes == ("gold",):   # how much of the gap is the order alone
            fifo_wall = run_ours(sub, workers, targets, "gold-fifo", fifo=True)["wall"]
            log(f"  {gname}: ours in NVIDIA's order (FIFO) {fifo_wall:.1f}s")
        stable_nv &= all(n["verdicts"] == nvs[0]["verdicts"] for n in nvs)
        stable_ours &= all(o["verdicts"] == ours[0]["verdicts"] for o in ours)
        nv_verdicts.update(nvs[0]["verdicts"])
        our_verdicts.update(ours[0]["verdicts"])
        groups.append({"name": gname, "modes": list(gmodes), "n": len(sub),
                       "nv_wall": median(n["wall"] for n in nvs), "ours_wall": median(o["wall"] for o in ours),
                       "nv_walls": [n["wall"] for n in nvs], "ours_walls": [o["wall"] for o in ours],
                       "nv_imports": median(n["wall_with_imports"] - n["wall"] for n in nvs),
                       "nv_script_overhead": median(n["script_overhead"] for n in nvs),
                       "ours_open": median(o["open"] for o in ours), "ours_close": median(o["close"] for o in ours),
                       "ours_job_seconds": median(o["job_seconds"] for o in ours),
                       "history_known": ours[0]["history_known"], "ours_fifo_wall": fifo_wall,
                       "nv_script_seconds": median(n["script_seconds"] for n in nvs),
                       "per_candidate": _per_candidate(sub, nvs[0]["durations"], ours[0]["durations"]),
                       "loads": [x["load"] for x in nvs + ours]})
        groups[-1]["ratio"] = groups[-1]["ours_wall"] / groups[-1]["nv_wall"]
    cmp = compare(cands, nv_verdicts, our_verdicts)
    by_mode = {}
    for m in modes:
        ks = [(c["sample"], c["step_id"]) for c in cands if c["mode"] == m]
        by_mode[m] = {"n": len(ks), "nv_pass": sum(nv_verdicts[k] == "pass" for k in ks),
                      "ours_pass": sum(our_verdicts[k] == "pass" for k in ks)}
    nv_all = sum(g["nv_wall"] for g in groups)
    ours_all = sum(g["ours_wall"] for g in groups)
    res = {"workers": workers, "rounds": rounds, "n": len(cands), "modes": list(modes),
           "wrong_all": wrong_all, "fifo": fifo, "nv_env": nv_versions(py), "groups": groups,
           "nv_wall": nv_all, "ours_wall": ours_all, "ratio_all": ours_all / nv_all,
           "compare": cmp, "by_mode": by_mode, "stable_nv": stable_nv, "stable_ours": stable_ours}
    gold = next((g for g in groups if g["modes"] == ["gold"]), None)
    res["ratio"] = gold["ratio"] if gold else res["ratio_all"]
    write_json(RUNS / "vs_nvidia" / "summary.json", res)
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    ok = "meets" if res["ratio"] <= 0.8 else "misses"
    L = [f"{res['n']} candidates, {res['workers']} workers on both sides, {res['rounds']} round(s) per group "
         f"(alternated order). NVIDIA side: nvidia-scicode `test_code`; its Python / numpy / scipy / "
         f"package: {res['nv_env']} (the image's interpreter build and library versions). `wrong` "
         f"{'covers all steps' if res['wrong_all'] else 'skips the 8 heaviest steps'}.", "",
         "| candidates | n | NVIDIA `test_code` (s) | ours, Docker + warm pool (s) | ours / NVIDIA | "
         "NVIDIA fixed part per script (s) | NVIDIA summed script time (s) | our summed job time (s) |",
         "|---|---|---|---|---|---|---|---|"]
    for g in res["groups"]:
        L.append(f"| {g['name']} ({', '.join(g['modes'])}) | {g['n']} | {g['nv_wall']:.1f} | {g['ours_wall']:.1f} | "
                 f"**{g['ratio']:.2f}** | {g['nv_script_overhead']:.2f} | {g['nv_script_seconds']:.1f} | "
                 f"{g['ours_job_seconds']:.1f} |")
    L.append(f"| all | {res['n']} | {res['nv_wall']:.1f} | {res['ours_wall']:.1f} | {res['ratio_all']:.2f} | | | |")
    g0 = res["groups"][0]
    order = ("in NVIDIA's order (`--fifo`)" if res.get("fifo") else
             f"longest expected step first (history known for {g0.get('history_known', 0)} of {g0['n']})")
    L += ["", f"Headline (the gold run's generated code): **ours / NVIDIA = {res['ratio']:.2f}** (goal <= 0.8: "
              f"{ok}). Ours ran {order}. Timed on NVIDIA's side: the `test_code()` call (its own imports "
              f"before it, ~{g0['nv_imports']:.0f} s, not counted); on ours: opening the backend to closing it.",
          "", "Where ours gains, on the same code, interpreter build and libraries:",
          f"- **Job environment** (`harness.sandbox.JOB_ENV`): glibc malloc keeps freed memory instead of an "
          f"mmap/munmap per large array, and numpy asks for no huge pages. Summed job time: ours "
          f"{g0['ours_job_seconds']:.1f} s against NVIDIA's summed script time {g0['nv_script_seconds']:.1f} s "
          f"(see 10.11 below).",
          "- **Order** (`harness.run.schedule`): NVIDIA maps its scripts in directory order, so a heavy step that "
          "starts late runs alone at the end; ours starts the longest expected step first."
          + (f" The same candidates in NVIDIA's order took {g0['ours_fifo_wall']:.1f} s on ours "
             f"({g0['ours_fifo_wall'] / g0['nv_wall']:.2f} of NVIDIA)." if g0.get("ours_fifo_wall") else ""),
          f"- **Fixed part per script**: NVIDIA starts `python` and imports scicode.parse.parse (h5py, scipy, "
          f"sympy) for every script, {g0['nv_script_overhead']:.2f} s; our warm containers import numpy and "
          "scipy before their job arrives. A script that dies at module level (`exit`, `raise`) never reaches "
          "NVIDIA's import and costs it only `python` + numpy, less than a container (~120 ms of daemon CPU), "
          "which is why ours is slower on failing answers. h5py reads only the step's datasets, not the whole file.",
          "", "Slowest candidates, NVIDIA script time vs our job time (s), first group:", "",
          "| step | mode | NVIDIA | ours |", "|---|---|---|---|"]
    for step, mode, a, b in res["groups"][0]["per_candidate"][:8]:
        L.append(f"| {step} | {mode} | {a if a is None else f'{a:.2f}'} | {b if b is None else f'{b:.2f}'} |")
    L += ["", "| mode | candidates | NVIDIA pass | ours pass |", "|---|---|---|---|"]
    for m, v in res["by_mode"].items():
        L.append(f"| {m} | {v['n']} | {v['nv_pass']} | {v['ours_pass']} |")
    cmp = res["compare"]
    L += ["", f"Same pass/not-pass verdict on {cmp['same']} of {res['n']} candidates; "
              f"verdicts stable across rounds: NVIDIA {res['stable_nv']}, ours {res['stable_ours']}."]
    if cmp["diff"]:
        groups = {}
        for d in cmp["diff"]:
            groups.setdefault((d["mode"], d["nvidia"], d["ours"]), []).append(d["step"])
        L += ["", "Differences:", "", "| mode | NVIDIA | ours | steps | why |", "|---|---|---|---|---|"]
        for (m, a, b), steps in groups.items():
            why = ("NVIDIA bug (upstream bug E): pass means exit status 0, so a module-level exit(0) / "
                   "SystemExit(0) / os._exit(0) passes without running a test" if m == "exit" and a == "pass"
                   else "unexpected: see bench/_runs/vs_nvidia")
            shown = ", ".join(steps[:12]) + (f" ... ({len(steps)})" if len(steps) > 12 else "")
            L.append(f"| {m} | {a} | {b} | {shown} | {why} |")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--wrong-all", action="store_true", help="wrong answers for the heavy steps too")
    ap.add_argument("--fifo", action="store_true", help="ours in NVIDIA's order, without the priority pool")
    a = ap.parse_args(argv)
    t = time.monotonic()
    res = run(a.workers, a.rounds, [m for m in a.modes.split(",") if m], a.wrong_all, a.fifo)
    print(res["markdown"])
    log(f"vs_nvidia took {time.monotonic() - t:.0f}s")


if __name__ == "__main__":
    main()
