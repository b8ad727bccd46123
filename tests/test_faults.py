"""Fault injection on real dev runs (issue 13): signals at random and at chosen moments,
SIGKILL, the endpoint going away, the output directory filling up or turning read-only,
sandbox containers and the Docker daemon going away. For every fault: the exit status, the
message, that a rerun reaches the gold score (1.0 / 1.0), and that nothing is left behind
(no container of the run, no torn store line). Moments come from a seeded RNG, so a failing
sequence can be replayed; a few moments are pinned with harness.util.faultpoint instead.

A small subset of the dev split (problems 4, 29, 38, 19: nine steps) answered with gold
code by a slow fake endpoint keeps each run to a few seconds.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_endpoint import FakeEndpoint

BIN = Path(sys.executable).parent
SUBSET = ("4", "29", "38", "19")
EXIT_WITHIN = 10.0          # seconds from a signal to the process's end (generous bound)
SEED = int(os.environ.get("SCICODE_FAULT_SEED", "13"))

pytestmark = pytest.mark.docker


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """(problems JSONL of the subset, dev targets, gold responder)."""
    from harness.data import dataset
    from harness import reference
    from harness.util.paths import targets_path
    try:
        problems = dataset.load_problems("dev")
    except dataset.DataError:
        dataset.pull()
        problems = dataset.load_problems("dev")
    probs = [p for p in problems if p["problem_id"] in SUBSET]
    assert len(probs) == len(SUBSET)
    tdata = targets_path("dev")
    if not tdata.is_file():
        subprocess.run([str(BIN / "scicode-harness"), "targets", "build", "--split", "dev"],
                       check=True, timeout=1800)
    pfile = tmp_path_factory.mktemp("faults") / "subset.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in probs))
    index = reference.StepIndex(probs)

    def gold(prompt, body):
        return reference.answer_for(index.find(prompt), "gold")
    return pfile, tdata, gold


class Eval:
    """One scicode_eval process; stderr collected by a thread (markers can be awaited)."""

    def __init__(self, subset, out: Path, url: str, *extra: str, env: dict | None = None):
        pfile, tdata, _ = subset
        self.out = out
        argv = [str(BIN / "scicode_eval"), "--model", "m", "--url", url, "--output-dir", str(out),
                "--problems", str(pfile), "--test-data", str(tdata), "--quiet",
                "--eval-threads", "2", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05", **(env or {})))
        self.err: list[str] = []
        self.out: list[str] = []
        self._t = [threading.Thread(target=self._read, args=(f, sink), daemon=True)
                   for f, sink in ((self.proc.stderr, self.err), (self.proc.stdout, self.out))]
        for t in self._t:
            t.start()

    @staticmethod
    def _read(f, sink):
        for line in f:
            sink.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, what, timeout: float = 120.0) -> None:
        """Until what() is true (a callable) or the text appears on stderr."""
        test = what if callable(what) else (lambda: what in self.stderr)
        end = time.monotonic() + timeout
        while not test():
            assert self.proc.poll() is None, f"exited {self.proc.returncode} early: {self.stderr}"
            assert time.monotonic() < end, f"timed out waiting for {what!r}: {self.stderr}"
            time.sleep(0.02)

    def handlers_ready(self) -> bool:
        """scicode_eval's main has installed its SIGINT/SIGTERM handlers (before that the
        interpreter is starting and the default action applies)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return False
        caught = int(next(l.split()[1] for l in status.splitlines() if l.startswith("SigCgt:")), 16)
        return bool(caught & (1 << (signal.SIGTERM - 1)))

    def signal_and_wait(self, sig: int, within: float = EXIT_WITHIN) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        return self.wait(within, t0)

    def wait(self, within: float = 300.0, t0: float | None = None) -> float:
        t0 = time.monotonic() if t0 is None else t0
        try:
            self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            pytest.fail(f"scicode_eval did not exit within {within} s: {self.stderr}")
        took = time.monotonic() - t0
        for t in self._t:
            t.join(10)
        return took


def verdict_lines(out: Path) -> int:
    p = out / "scicode_cache" / "verdicts.jsonl"
    return len(p.read_bytes().splitlines()) if p.exists() else 0


def assert_intact(out: Path) -> None:
    """Every store line and every records.jsonl line is whole JSON; no temp file is left."""
    for p in [out / "records.jsonl", *(out / "scicode_cache").glob("*.jsonl")]:
        if p.exists():
            raw = p.read_bytes()
            assert not raw or raw.endswith(b"\n"), f"{p}: torn last line"
            for line in raw.splitlines():
                json.loads(line)
    assert not list(out.rglob("*.tmp")), list(out.rglob("*.tmp"))


def containers_of(docker_client, pid: int) -> list:
    from harness.sandbox import cleanup
    return [c for c in cleanup.list_containers(docker_client)
            if (c.get("Labels") or {}).get(cleanup.L_PID) == str(pid)]


def assert_nothing_left(docker_client, ev: Eval) -> None:
    assert containers_of(docker_client, ev.proc.pid) == [], "containers left behind"


def gold_rerun(subset, out: Path, url: str, *extra: str) -> dict:
    ev = Eval(subset, out, url, *extra)
    ev.wait(300)
    assert ev.proc.returncode == 0, ev.stderr[-3000:]
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert data["steps_pass@1"] == 1.0 and data["problems_pass@1"] == 1.0, data["counts"]
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and {r["status"] for r in recs} == {"pass"}
    assert_intact(out)
    return data


def only_pass_stored(out: Path) -> None:
    """Gold answers: any stored verdict but pass would be an infrastructure fault
    recorded as the model's."""
    p = out / "scicode_cache" / "verdicts.jsonl"
    if p.exists():
        stored = [json.loads(x)["record"]["status"] for x in p.read_text().splitlines()]
        assert set(stored) <= {"pass"}, stored


INTERRUPTED = {signal.SIGINT: (130, "scicode_eval: interrupted; finished work is kept, rerun to resume"),
               signal.SIGTERM: (143, "scicode_eval: terminated (SIGTERM); finished work is kept, "
                                     "rerun to resume")}


def assert_interrupted(ev: Eval, sig: int) -> None:
    code, msg = INTERRUPTED[sig]
    assert ev.proc.returncode == code, (ev.proc.returncode, ev.stderr[-3000:])
    assert msg in ev.stderr, ev.stderr[-3000:]
    assert "Traceback" not in ev.stderr, ev.stderr[-3000:]


# ----------------------------------------------------------------------------- signals
def test_twenty_sigints_at_random_moments(subset, tmp_path, docker_client, sandbox_image):
    """20 consecutive Ctrl-Cs at seeded random moments of fresh runs: each exits 130 within
    10 s with the message and leaves no container; reruns of some reach the gold score."""
    rng = random.Random(SEED)
    _, _, gold = subset
    outs, slowest = [], 0.0
    with FakeEndpoint(gold, latency=1.0) as ep:
        for i in range(20):
            out = tmp_path / f"run{i}"
            delay = rng.uniform(0.0, 6.0)
            ev = Eval(subset, out, ep.url, "--concurrent-requests", "2")
            ev.wait_for(ev.handlers_ready, 60)
            time.sleep(delay)
            took = ev.signal_and_wait(signal.SIGINT)
            assert_interrupted(ev, signal.SIGINT)
            assert took < EXIT_WITHIN, f"run {i} (SIGINT {delay:.2f} s in) took {took:.1f} s"
            assert_nothing_left(docker_client, ev)
            assert_intact(out)
            only_pass_stored(out)
            outs.append((verdict_lines(out), out))
            slowest = max(slowest, took)
    print(f"20 SIGINTs: slowest exit {slowest:.1f} s after the signal")
    with FakeEndpoint(gold) as ep:   # the run that got furthest, and a seeded other one
        outs.sort(key=lambda x: x[0])
        for out in {outs[-1][1], rng.choice(outs[:-1])[1]}:
            gold_rerun(subset, out, ep.url)


def _generating(ep):
    return lambda: sum(1 for r in ep.requests if r.body and r.body.get("max_tokens") != 1) >= 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["generation", "h5read", "container_start", "report"])
def test_signal_at_a_chosen_moment(subset, tmp_path, docker_client, sandbox_image, sig, moment):
    """A signal while a request is in flight, while the targets reader holds h5py's lock
    (a read in flight), while a sandbox container is being started, and while the report is
    being written: exit 130/143 within 10 s, work kept, nothing left; the rerun scores 1.0."""
    _, _, gold = subset
    out = tmp_path / "out"
    pause = {"generation": None, "h5read": "h5read=20", "container_start": "container_start=20",
             "report": "report=20"}[moment]
    env = {"SCICODE_FAULT_PAUSE": pause} if pause else {}
    with FakeEndpoint(gold, latency=0.2 if pause else 3.0) as ep:
        ev = Eval(subset, out, ep.url, env=env)
        ev.wait_for(_generating(ep) if moment == "generation" else f"fault point {moment}", 180)
        took = ev.signal_and_wait(sig)
    assert_interrupted(ev, sig)
    assert took < EXIT_WITHIN, took
    assert_nothing_left(docker_client, ev)
    assert_intact(out)
    only_pass_stored(out)
    if moment == "report":   # every verdict was stored before the report
        assert verdict_lines(out) == 9
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url)


def test_second_signal_exits_at_once(subset, tmp_path, docker_client, sandbox_image):
    """A second Ctrl-C while the first one's clean-up waits (here: on a container start in
    flight) leaves at once with 130; nothing is torn and a rerun scores 1.0."""
    _, _, gold = subset
    out = tmp_path / "out"
    with FakeEndpoint(gold, latency=0.2) as ep:
        ev = Eval(subset, out, ep.url, env={"SCICODE_FAULT_PAUSE": "container_start=30"})
        ev.wait_for("fault point container_start", 180)
        ev.proc.send_signal(signal.SIGINT)    # its clean-up waits for the start in flight
        time.sleep(0.5)
        took = ev.signal_and_wait(signal.SIGINT, 5.0)
    assert ev.proc.returncode == 130 and took < 5.0, (ev.proc.returncode, ev.stderr)
    assert_intact(out)
    from harness.sandbox import cleanup
    cleanup.sweep(docker_client)    # the forced exit may leave the container being started
    assert_nothing_left(docker_client, ev)
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url)


def test_sigkill_then_sweep_and_resume(subset, tmp_path, docker_client, sandbox_image):
    """SIGKILL runs no handler: its containers stay until `scicode-harness sweep` (or the
    next run) removes them; the rerun reuses stored work and scores 1.0."""
    _, _, gold = subset
    out = tmp_path / "out"
    with FakeEndpoint(gold, latency=0.5) as ep:
        ev = Eval(subset, out, ep.url)
        ev.wait_for(lambda: verdict_lines(out) >= 2, 180)
        ev.proc.kill()
        ev.wait(30)
    assert ev.proc.returncode == -signal.SIGKILL
    left = containers_of(docker_client, ev.proc.pid)
    assert left, "a killed run leaves its containers (warm pool, verifier)"
    p = subprocess.run([str(BIN / "scicode-harness"), "sweep"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert_nothing_left(docker_client, ev)
    assert_intact(out)
    done = verdict_lines(out)
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url)
        gens = sum(1 for r in ep.requests if r.body and r.body.get("max_tokens") != 1)
    assert gens <= 9 - done, "stored generations were requested again"


# ----------------------------------------------------------------------------- endpoint
def _gens(ep) -> int:
    return sum(1 for r in ep.requests if r.body and r.body.get("max_tokens") != 1)


def test_endpoint_killed_and_restarted(subset, tmp_path, docker_client, sandbox_image):
    """The endpoint dies mid-run. Back within the retries: the run finishes with the gold
    score. Gone for good: exit 4 naming the failed requests; the rerun scores 1.0."""
    _, _, gold = subset
    out = tmp_path / "back"
    ep = FakeEndpoint(gold, latency=0.3).start()
    port = ep.port
    ev = Eval(subset, out, ep.url, "--extra-params", "max_retries=14")   # ~0.05 * 2^14 s of backoff: outlasts a loaded restart
    ev.wait_for(lambda: _gens(ep) >= 3, 180)
    ep.stop()
    time.sleep(2.0)
    ep = FakeEndpoint(gold, port=port).start()
    try:
        ev.wait(300)
    finally:
        ep.stop()
    assert ev.proc.returncode == 0, ev.stderr[-3000:]
    assert "steps_pass@1    1.0000  (9/9)" in ev.stdout
    assert_nothing_left(docker_client, ev)

    out = tmp_path / "gone"
    ep = FakeEndpoint(gold, latency=0.3).start()
    ev = Eval(subset, out, ep.url)
    try:
        ev.wait_for(lambda: _gens(ep) >= 3, 180)
    finally:
        ep.stop()
    ev.wait(300)
    assert ev.proc.returncode == 4, ev.stderr[-3000:]
    assert "step(s) without a model answer after retries" in ev.stderr
    assert_nothing_left(docker_client, ev)
    assert_intact(out)
    only_pass_stored(out)
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url)


# ----------------------------------------------------------------------------- output dir
@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 16 MiB tmpfs (root only): the output directory that fills up or turns read-only."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True, timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=30)


def _fill(mnt: Path) -> Path:
    """Write zeros until the filesystem is full. Unbuffered: a buffered file keeps the bytes
    that did not fit and raises ENOSPC again on close (the cause of a flaky failure here)."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 16))
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("fault", ["full", "quota"])
def test_output_dir_full_or_unwritable(subset, tmp_path, small_tmpfs, docker_client, sandbox_image, fault):
    """The output directory fills up (a full tmpfs), or its files can grow no more (a file
    size limit set on the running process, as a quota would; a remount read-only is refused
    while the stores are open): exit 2 with one clear line, no torn records.jsonl or store
    line, nothing left; once fixed, the rerun scores 1.0."""
    _, _, gold = subset
    out = small_tmpfs / "out"
    with FakeEndpoint(gold, latency=0.3) as ep:
        ev = Eval(subset, out, ep.url, "--log-dir", str(tmp_path / "logs"))
        ev.wait_for(lambda: verdict_lines(out) >= 2, 180)
        if fault == "full":
            filler = _fill(small_tmpfs)
        else:
            size = (out / "scicode_cache" / "verdicts.jsonl").stat().st_size
            subprocess.run(["prlimit", f"--pid={ev.proc.pid}", f"--fsize={size}"], check=True, timeout=30)
        ev.wait(120)
    want = "No space left on device" if fault == "full" else "File too large"
    assert ev.proc.returncode == 2, ev.stderr[-3000:]
    assert "scicode_eval: error: stopped: cannot write the output" in ev.stderr and want in ev.stderr, ev.stderr
    assert "finished work is kept, rerun to resume" in ev.stderr
    assert "Traceback" not in ev.stderr, ev.stderr[-3000:]
    assert_nothing_left(docker_client, ev)
    if fault == "full":
        filler.unlink()
    assert_intact(out)
    only_pass_stored(out)
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url, "--log-dir", str(tmp_path / "logs"))


# ----------------------------------------------------------------------------- Docker
def _run_containers(docker_client, pid: int, verifier: bool) -> list:
    from harness.sandbox import cleanup
    return [c for c in containers_of(docker_client, pid)
            if ((c.get("Labels") or {}).get(cleanup.L_JOB) == "verifier") == verifier
            and c.get("State") == "running"]


def test_sandbox_and_verifier_containers_killed(subset, tmp_path, docker_client, sandbox_image):
    """`docker kill` of the run's sandbox containers (jobs in flight and warm ones) and of
    its verifier: in-flight jobs come back as infrastructure failures and are retried, the
    verifier is restarted; no killed job is stored as the model's verdict (gold answers:
    every stored verdict passes) and the run ends with the gold score."""
    _, _, gold = subset

    def slow_gold(prompt, body):   # every job runs 2 s: the kills below always hit one in flight
        text = gold(prompt, body)
        return text.replace("\n```", "\n__import__('time').sleep(2)\n```", 1) if "```" in text else text

    out = tmp_path / "out"
    logs = tmp_path / "logs"
    with FakeEndpoint(slow_gold) as ep:
        ev = Eval(subset, out, ep.url, "--log-dir", str(logs))
        ev.wait_for(lambda: verdict_lines(out) >= 1, 180)
        for c in _run_containers(docker_client, ev.proc.pid, verifier=True):
            docker_client.api.kill(c["Id"])
        for _ in range(4):
            for c in _run_containers(docker_client, ev.proc.pid, verifier=False):
                try:
                    docker_client.api.kill(c["Id"])
                except Exception:   # noqa: BLE001 - finished and removed meanwhile
                    pass
            time.sleep(0.5)
        ev.wait(300)
    assert ev.proc.returncode == 0, ev.stderr[-3000:]
    assert "steps_pass@1    1.0000  (9/9)" in ev.stdout, ev.stdout
    only_pass_stored(out)
    assert_nothing_left(docker_client, ev)
    log = (logs / "scicode_eval.log").read_text()
    # both paths were taken: a killed job retried as infra, the killed verifier restarted
    assert "stopped from outside" in log and "restarting it" in log, log[-3000:]


def _foreign_containers(docker_client) -> list:
    return docker_client.api.containers()   # running ones: a restart would stop them


def test_docker_daemon_restarted(subset, tmp_path, docker_client, sandbox_image):
    """dockerd stopped mid-run and started again (scripts/ensure-docker.sh): jobs in flight
    come back as infrastructure failures and are retried, or the run stops with exit 2 and
    a clear line; never a model verdict (every stored verdict passes). The rerun scores 1.0
    and nothing is left. Restarting the daemon stops every container on it, so this runs
    only when no other container is running (else it is skipped, saying why)."""
    others = _foreign_containers(docker_client)
    if others:
        pytest.skip(f"{len(others)} other container(s) run on this Docker daemon; restarting it "
                    "would break them")
    _, _, gold = subset
    out = tmp_path / "out"
    script = Path(__file__).resolve().parent.parent / "scripts" / "ensure-docker.sh"
    with FakeEndpoint(gold, latency=0.3) as ep:
        ev = Eval(subset, out, ep.url)
        ev.wait_for(lambda: verdict_lines(out) >= 2, 180)
        pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGTERM)
        end = time.monotonic() + 90
        while Path(f"/proc/{pids[0]}").exists() and time.monotonic() < end:
            time.sleep(0.2)
        p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        ev.wait(600)
    assert ev.proc.returncode in (0, 2), ev.stderr[-3000:]
    if ev.proc.returncode == 2:
        assert "scicode_eval: error: stopped:" in ev.stderr and "rerun to resume" in ev.stderr, ev.stderr
    only_pass_stored(out)
    assert_intact(out)
    import docker
    client = docker.from_env()
    left = containers_of(client, ev.proc.pid)
    if left:   # it ended while the daemon was still down: it said so, and the rerun sweeps them
        assert ev.proc.returncode == 2 and "sandbox sweep" in ev.stderr, ev.stderr[-3000:]
    with FakeEndpoint(gold) as ep:
        gold_rerun(subset, out, ep.url)
    assert containers_of(client, ev.proc.pid) == []
