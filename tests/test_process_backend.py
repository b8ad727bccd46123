"""Process backend specifics (no Docker). Hostile programs: tests/test_sandbox_redteam.py."""
import json
import logging
import os
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.sandbox import JOB_ENV, Job, Limits, SandboxUnavailable, TestResult
from harness.sandbox import process_backend as pb
from harness.sandbox.registry import get_backend

LIM = Limits(timeout=20, memory="768m", fsize="16m", output=1 << 16)


@pytest.fixture(scope="module")
def be():
    with pb.ProcessBackend(limits=LIM, workers=2) as backend:
        yield backend


def run(backend, code, **changes):
    return backend.run(Job(code=textwrap.dedent(code), limits=Limits(**{**LIM.__dict__, **changes})))


def out_json(o):
    assert o.status == "ok", o.to_dict()
    return json.loads(o.stdout.strip().splitlines()[-1])


def test_isolation_is_reported(be):
    iso = be.isolation
    assert set(iso) == {"netns", "pidns", "uid", "nproc", "wrapper"}
    assert iso["wrapper"] in ("unshare", "bootstrap", "none")


def test_warns_once_that_isolation_is_weaker(caplog, monkeypatch):
    monkeypatch.setattr(pb, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=pb.__name__):
        pb.ProcessBackend(limits=LIM)
        pb.ProcessBackend(limits=LIM)
    msgs = [r.getMessage() for r in caplog.records if "isolates jobs far less" in r.getMessage()]
    assert len(msgs) == 1


def test_environment_is_scrubbed(be):
    os.environ["SCICODE_PROCESS_SECRET"] = "leak-" + uuid.uuid4().hex
    try:
        env = out_json(run(be, "import os, json\nprint(json.dumps(dict(os.environ)))"))
    finally:
        del os.environ["SCICODE_PROCESS_SECRET"]
    env.pop("LC_CTYPE", None)            # set by CPython's own C-locale coercion
    assert set(env) == set(JOB_ENV) | {"HOME", "TMPDIR", "PATH"}
    assert {k: env[k] for k in JOB_ENV} == JOB_ENV
    assert env["TZ"] == "UTC" and env["PYTHONHASHSEED"] == "0" and env["MPLBACKEND"] == "Agg"
    assert env["HOME"] == env["TMPDIR"]


def test_private_scratch_dir_is_removed(be):
    res = out_json(run(be, """
        import json, os
        open("f.txt", "w").write("x")
        os.makedirs("sub/deeper")
        os.chmod("sub", 0o500)
        print(json.dumps({"cwd": os.getcwd(), "home": os.environ["HOME"],
                          "mode": oct(os.stat(".").st_mode & 0o777)}))
    """))
    assert res["cwd"] == res["home"] and res["mode"] == "0o700"
    assert not os.path.exists(res["cwd"])


def test_rlimits_are_applied(be):
    res = out_json(run(be, """
        import json, resource as r
        print(json.dumps({n: r.getrlimit(getattr(r, n))[0] for n in
                          ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")}))
    """))
    assert res == {"RLIMIT_AS": 768 << 20, "RLIMIT_CPU": 21, "RLIMIT_FSIZE": 16 << 20,
                   "RLIMIT_NOFILE": 1024, "RLIMIT_CORE": 0}


def test_stdin_is_empty_for_the_program(be):
    assert out_json(run(be, "import sys, json\nprint(json.dumps(sys.stdin.read()))")) == ""


def test_timeout_kills_the_process_group(be):
    tag = "scicode-pg-" + uuid.uuid4().hex
    o = run(be, f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {tag!r}])
        time.sleep(600)
    """, timeout=2)
    assert o.status == "timeout" and o.timed_out and o.exit_code is None
    assert o.duration < 2 + 2
    deadline = time.monotonic() + 5
    while _procs_with(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _procs_with(tag) == []


def _procs_with(tag):
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                if tag.encode() in open(f"/proc/{e}/cmdline", "rb").read():
                    out.append(e)
            except OSError:
                pass
    return out


def test_signal_death_exit_code(be):
    o = run(be, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert o.status == "error" and o.exit_code == 137 and not o.timed_out


def test_tests_mode_report(be):
    o = be.run(Job(code="def f(x):\n    return x + 1", tests=["assert f(1) == target"], targets=[2],
                   limits=LIM))
    assert o.status == "ok" and o.report.tests == [TestResult("pass", None)]


def test_concurrent_jobs(be):
    jobs = [Job(code=f"print({i} * 2)", limits=LIM) for i in range(6)]
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(be.run, jobs))
    assert [o.stdout for o in outs] == [f"{i * 2}\n" for i in range(6)]


def test_bootstrap_fallback(monkeypatch):
    """Without prlimit/unshare binaries the Python bootstrap applies the rlimits."""
    be = pb.ProcessBackend(limits=LIM)
    be.iso = dict(wrap=None, netns=False, pidns=False, uid=os.geteuid(), prlimit=None)
    argv = be._argv(LIM)
    assert argv[:3] == [be.python, "-S", "-c"] and "/unshare" not in " ".join(argv)
    res = out_json(run(be, "import json, resource as r\nprint(json.dumps(r.getrlimit(r.RLIMIT_AS)))"))
    assert res == [768 << 20, 768 << 20]


def test_missing_interpreter_is_infra():
    be = pb.ProcessBackend(limits=LIM, python="/nonexistent/python3", isolate=False)
    o = be.run(Job(code="print(1)", limits=LIM))
    assert o.status == "infra" and "/nonexistent/python3" in o.stderr


def test_close_kills_running_jobs():
    be = pb.ProcessBackend(limits=LIM)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("o", be.run(
        Job(code="import time\ntime.sleep(60)", limits=Limits(**{**LIM.__dict__, "timeout": 60})))))
    t.start()
    time.sleep(1.0)
    be.close()
    t.join(10)
    assert not t.is_alive() and box["o"].status == "error" and box["o"].exit_code == 137


def test_get_backend_process_and_unknown():
    b = get_backend("process", limits=LIM)
    assert isinstance(b, pb.ProcessBackend) and b.name == "process" and b.image is None
    with pytest.raises(SandboxUnavailable):
        get_backend("firecracker")


def test_docker_without_daemon_names_the_fixes_and_auto_falls_back(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable) as ei:
        get_backend("docker")
    msg = str(ei.value)
    assert "\n" not in msg and "start Docker" in msg and "--sandbox bwrap" in msg
    with get_backend("auto", limits=LIM) as be:   # bubblewrap works here (make setup installs it)
        assert (be.name, be.tier) == ("bwrap", "bwrap") and "no Docker daemon answers" in be.tier_reason


def test_cli_json_process(tmp_path):
    import subprocess
    from harness.sandbox import OUTCOME_KEYS
    prog = tmp_path / "p.py"
    prog.write_text("import sys\nprint('out')\nsys.exit(4)\n")
    p = subprocess.run([sys.executable, "-m", "harness.cli.admin", "sandbox", "run", str(prog),
                        "--backend", "process", "--timeout", "20", "--json"],
                       capture_output=True, text=True, timeout=120)
    obj = json.loads(p.stdout)
    assert p.returncode == 1 and tuple(obj) == OUTCOME_KEYS
    assert obj["status"] == "error" and obj["exit_code"] == 4 and obj["stdout"] == "out\n"


def test_no_job_starts_once_the_backend_is_closed():
    backend = pb.ProcessBackend(limits=LIM, workers=1)
    assert run(backend, "print(1)").status == "ok" and not backend.closing
    backend.close()
    o = run(backend, "print(1)")
    assert backend.closing and o.status == "infra" and "closed" in o.stderr
