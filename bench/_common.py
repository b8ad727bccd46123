"""Shared helpers for the benchmarks: machine facts, the reference / fake endpoints,
running `scicode_eval` as a subprocess while polling its memory, and load sampling.

Nothing here asserts on timings; the scripts report figures and ratios measured in
one run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RUNS = BENCH / "_runs"                      # gitignored scratch: outputs, the NVIDIA venv
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def eval_bin() -> str:
    p = VENV_BIN / "scicode_eval"
    return str(p) if p.exists() else "scicode_eval"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------ machine facts
def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_info() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = next((int(ln.split()[1]) // 1024 for ln in _read("/proc/meminfo").splitlines()
                if ln.startswith("MemTotal")), 0)
    info = {"cpu": cpu, "cpus": os.cpu_count(), "mem_mb": mem, "kernel": platform.release(),
            "python": platform.python_version(), "load_at_start": os.getloadavg()[0]}
    try:
        import numpy
        import scipy
        info["host_numpy"], info["host_scipy"] = numpy.__version__, scipy.__version__
    except ImportError:
        pass
    try:
        info["harness_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
            text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["harness_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import docker
        c = docker.from_env(timeout=30)
        v = c.version()
        d = c.info()
        info["docker"] = v.get("Version")
        info["cgroup"] = f"{d.get('CgroupDriver')} v{d.get('CgroupVersion')}"
        info["runtime"] = d.get("DefaultRuntime")
        from harness.sandbox import image_lookup as himage
        img = himage.find_image(c)
        if img is not None:
            info["image"] = (img.attrs.get("RepoTags") or [img.id])[0]
            info["image_id"] = img.id[7:19]
        c.close()
    except Exception as exc:  # noqa: BLE001 - facts only
        info["docker"] = f"unavailable ({type(exc).__name__})"
    return info


def image_versions() -> dict:
    """numpy/scipy/python inside the sandbox image (one short container)."""
    try:
        import docker
        from harness.sandbox import image_lookup as himage
        c = docker.from_env(timeout=60)
        img = himage.find_image(c)
        out = c.containers.run(img.id, ["python3", "-c",
                                        "import sys, numpy, scipy; print(sys.version.split()[0], "
                                        "numpy.__version__, scipy.__version__)"],
                               network_disabled=True, remove=True, user="65534:65534")
        py, np_, sp = out.decode().split()
        c.close()
        return {"image_python": py, "image_numpy": np_, "image_scipy": sp}
    except Exception as exc:  # noqa: BLE001
        return {"image_python": f"? ({type(exc).__name__})"}


def machine_table(info: dict) -> str:
    rows = [("CPU", f"{info.get('cpu')} x {info.get('cpus')}"), ("RAM", f"{info.get('mem_mb')} MB"),
            ("kernel", info.get("kernel")), ("Docker", f"{info.get('docker')} ({info.get('cgroup')}, "
                                                      f"{info.get('runtime')})"),
            ("harness", f"{info.get('harness_commit')}{' + uncommitted changes' if info.get('harness_dirty') else ''}"),
            ("harness Python / numpy / scipy (process backend)",
             f"{info.get('python')} / {info.get('host_numpy')} / {info.get('host_scipy')}"),
            ("sandbox image / its Python / numpy / scipy",
             f"{info.get('image')} ({info.get('image_id')}) / {info.get('image_python')} / "
             f"{info.get('image_numpy')} / {info.get('image_scipy')}"),
            ("1-min load average at start", f"{info.get('load_at_start', 0):.2f}")]
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


# ------------------------------------------------------------------------ endpoints
@contextlib.contextmanager
def reference_server(mode: str = "gold", split: str = "dev"):
    """The harness's reference endpoint (gold code answers) in a thread; yields the URL."""
    from harness.reference import make_server
    srv = make_server("127.0.0.1", 0, mode=mode, split=split)
    t = threading.Thread(target=srv.serve_forever, name=f"reference-{mode}", daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1/chat/completions"
    finally:
        srv.shutdown()
        srv.server_close()


def fake_endpoint_class():
    """tests/fake_endpoint.py's FakeEndpoint (tests/ is not a package)."""
    path = ROOT / "tests" / "fake_endpoint.py"
    spec = importlib.util.spec_from_file_location("_bench_fake_endpoint", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.FakeEndpoint


# ------------------------------------------------------------------------ load
class LoadSampler:
    """Samples the 1-min load average and host CPU utilisation while a run lasts."""

    def __init__(self, every: float = 1.0):
        self.every = every
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._cpu0 = self._cpu()

    @staticmethod
    def _cpu():
        f = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f), idle

    def _loop(self):
        while not self._stop.wait(self.every):
            self.loads.append(os.getloadavg()[0])

    def __enter__(self):
        self.loads.append(os.getloadavg()[0])
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        tot1, idle1 = self._cpu()
        tot0, idle0 = self._cpu0
        self.busy = 1 - (idle1 - idle0) / max(tot1 - tot0, 1)

    def summary(self) -> dict:
        return {"load_min": min(self.loads), "load_max": max(self.loads),
                "load_mean": statistics.mean(self.loads), "host_busy": getattr(self, "busy", None)}


# ------------------------------------------------------------------------ running scicode_eval
def _tree_rss(proc) -> tuple[int, int]:
    """(RSS of the root process, RSS summed over the process tree), bytes."""
    import psutil
    try:
        root = proc.memory_info().rss
    except psutil.Error:
        return 0, 0
    total = root
    try:
        kids = proc.children(recursive=True)
    except psutil.Error:
        kids = []
    for k in kids:
        try:
            total += k.memory_info().rss
        except psutil.Error:
            pass
    return root, total


def run_eval(args: list[str], out: Path, *, env: Optional[dict] = None, poll: float = 0.05,
             timeout: float = 3600, exe: Optional[list[str]] = None) -> dict:
    """Run `scicode_eval ARGS --output-dir OUT --quiet` in a fresh process.

    Returns wall time, exit code, the harness's peak RSS (the root process, sampled
    every `poll` s with psutil, and its exact high-water mark from wait4's rusage),
    the peak summed over its process tree (includes process-backend jobs), and the
    parsed results file and records. `exe` replaces the command (e.g. a patched driver).
    """
    import psutil
    out = Path(out)
    cmd = [*(exe or [eval_bin()]), *args, "--output-dir", str(out), "--quiet"]
    e = dict(os.environ, **(env or {}))
    e.setdefault("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, text=True)
    ps = psutil.Process(p.pid)
    peak_root = peak_tree = 0
    series = []
    stdout_chunks: list[str] = []
    stderr_chunks: list[str] = []
    readers = [threading.Thread(target=lambda s, acc: acc.append(s.read()), args=(p.stdout, stdout_chunks),
                                daemon=True),
               threading.Thread(target=lambda s, acc: acc.append(s.read()), args=(p.stderr, stderr_chunks),
                                daemon=True)]
    for r in readers:
        r.start()
    rusage = None
    while True:
        try:
            pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        r_root, r_tree = _tree_rss(ps)
        peak_root, peak_tree = max(peak_root, r_root), max(peak_tree, r_tree)
        series.append((round(time.monotonic() - t0, 2), r_root))
        if time.monotonic() - t0 > timeout:
            p.kill()
        time.sleep(poll)
    wall = time.monotonic() - t0
    for r in readers:
        r.join(timeout=10)
    res = {"cmd": cmd, "rc": p.returncode, "wall": wall, "peak_rss_root": peak_root,
           "peak_rss_tree": peak_tree,
           "maxrss_wait4": (rusage.ru_maxrss * 1024) if rusage is not None else None,
           # CPU of the harness and of the children it waited for (process-backend jobs)
           "cpu": (rusage.ru_utime + rusage.ru_stime) if rusage is not None else None,
           "rss_series": series, "stdout": "".join(stdout_chunks), "stderr": "".join(stderr_chunks)}
    results = list((out / "scicode_results").glob("*.json")) if (out / "scicode_results").is_dir() else []
    if results:
        res["results"] = json.loads(results[0].read_text())
    rec = out / "records.jsonl"
    res["records"] = [json.loads(ln) for ln in rec.read_text().splitlines() if ln.strip()] if rec.exists() else []
    return res


def ensure_history(workers: int = 2) -> int:
    """Make sure the step-duration history knows every dev step, so timed runs all start
    from the same schedule (longest expected step first). Missing steps are learned by
    one untimed gold dev run in the Docker sandbox, as a user's first run would. Returns
    how many steps were missing."""
    from harness.data import dataset
    from harness.run.schedule import History
    steps = [s["step_number"] for p in dataset.load_problems("dev") for s in p["sub_steps"]
             if s["step_number"] not in dataset.SKIPPED_STEPS]
    h = History()
    missing = [s for s in steps if h.expect(s) is None]
    if missing:
        log(f"step history lacks {len(missing)} dev step(s): one untimed gold run to learn them")
        with reference_server("gold") as url:
            r = run_eval(["--model", "scicode-reference", "--url", url, "--split", "dev", "--sandbox", "docker",
                          "--eval-threads", str(workers)], fresh_dir("history-seed"))
        if r["rc"] != 0:
            raise SystemExit(f"seeding the step history failed (rc {r['rc']}): {r['stderr'][-1000:]}")
    return len(missing)


def counts(records: list[dict]) -> dict:
    c: dict[str, int] = {}
    for r in records:
        c[r["status"]] = c.get(r["status"], 0) + 1
    return c


def fmt_counts(counts) -> str:
    """Verdict counts as a table cell: `fail 3, pass 47`."""
    return ", ".join(f"{k} {v}" for k, v in sorted((counts or {}).items()))


def fmt_mb(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str))


def fresh_dir(name: str) -> Path:
    import shutil
    d = RUNS / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


Section = Callable[..., dict]


# ------------------------------------------------------------------------ context probes
SPEED_SNIPPET = ("import time\nc = time.process_time()\nx = 0\nfor i in range(5_000_000):\n    x += i * i\n"
                 "print(time.process_time() - c)\n")


def pure_python_speed() -> dict:
    """CPU seconds of the same pure-Python loop in the harness's interpreter (which the
    process backend uses) and in the sandbox image's (median of 3 each)."""
    out = {}
    host = []
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", SPEED_SNIPPET], capture_output=True, text=True)
        host.append(float(p.stdout.strip()))
    out["harness_python"] = median(host)
    try:
        import docker
        from harness.sandbox import image_lookup as himage
        c = docker.from_env(timeout=60)
        img = himage.find_image(c)
        vals = []
        for _ in range(3):
            o = c.containers.run(img.id, ["python3", "-c", SPEED_SNIPPET], network_disabled=True,
                                 remove=True, user="65534:65534")
            vals.append(float(o.decode().strip()))
        out["image_python"] = median(vals)
        c.close()
    except Exception as exc:  # noqa: BLE001
        out["image_python"] = None
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def external_load(seconds: float = 3.0) -> dict:
    """Host CPU busy fraction while this benchmark runs nothing, and other running containers."""
    s = LoadSampler(every=seconds)
    with s:
        time.sleep(seconds)
    res = {"busy": s.busy, "load1": os.getloadavg()[0]}
    try:
        import docker
        c = docker.from_env(timeout=30)
        res["containers"] = len(c.containers.list())
        c.close()
    except Exception:  # noqa: BLE001
        res["containers"] = None
    return res
