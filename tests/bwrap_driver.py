"""The bwrap backend in a harness process of a non-root user, for the red-team suite.

`RemoteBackend.start` copies the sandbox package (stdlib only) and the locks to a directory
anyone can read, makes the user `scicode-redteam` (useradd) when missing, and starts
``setpriv --reuid=<user> PYTHON bwrap_driver.py`` (the built 2024 environment, which has numpy) there: a real BwrapBackend whose
harness is not root (bwrap maps the sandbox's 65534 to that user). Jobs and Outcomes cross
its stdin/stdout as JSON lines; the tests call `run` as on any backend.
"""
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

USER = "scicode-redteam"
ROOT = Path(__file__).resolve().parents[1]


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        USER], check=True)
        return pwd.getpwnam(USER)


def _python() -> str:
    """An interpreter the user can run that has numpy (the host side parses reports with the
    codec): the built 2024 environment (`make test` names it), else the system python."""
    from harness.sandbox.venvs import find_env
    built = find_env()
    venv = os.environ.get("SCICODE_PROCESS_PYTHON") or (str(built / "bin" / "python") if built else "")
    return venv if venv and os.access(venv, os.X_OK) else "/usr/bin/python3"


class RemoteBackend:
    name = "bwrap"
    runtime = None
    image = None

    def __init__(self, proc, hello: dict, workdir: Path):
        self.proc = proc
        self.workdir = workdir
        self.isolation = hello["isolation"]
        self.uid = hello["uid"]

    @classmethod
    def start(cls, limits, workers: int = 2) -> "RemoteBackend":
        import pytest
        import tempfile
        if os.geteuid() != 0:
            pytest.skip("the harness already runs as a non-root user: the `bwrap` case is that run")
        user = ensure_user()
        workdir = Path(tempfile.mkdtemp(prefix="scicode-bwrap-user-"))
        workdir.chmod(0o755)
        shutil.copytree(ROOT / "harness" / "sandbox", workdir / "harness" / "sandbox")
        shutil.copytree(ROOT / "harness" / "util", workdir / "harness" / "util")
        for name in ("__init__.py", "errors.py"):
            shutil.copy(ROOT / "harness" / name, workdir / "harness" / name)
        (workdir / "sandbox_image").mkdir()
        for lock in (ROOT / "sandbox_image").glob("*.lock"):
            shutil.copy(lock, workdir / "sandbox_image" / lock.name)
        shutil.copy(__file__, workdir / "bwrap_driver.py")
        subprocess.run(["chmod", "-R", "a+rX", str(workdir)], check=True)
        argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                _python(), str(workdir / "bwrap_driver.py"),
                json.dumps({"limits": limits.__dict__, "workers": workers})]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": str(workdir),
               "SCICODE_REDTEAM_SECRET": os.environ.get("SCICODE_REDTEAM_SECRET", "")}
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                cwd=str(workdir), text=True)
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the non-root bwrap driver did not start")
        hello = json.loads(line)
        if "error" in hello:
            raise RuntimeError(f"the non-root bwrap driver failed: {hello['error']}")
        assert hello["uid"] == user.pw_uid != 0, hello
        return cls(proc, hello, workdir)

    def run(self, job):
        from harness.sandbox import Outcome
        self.proc.stdin.write(json.dumps({"code": job.code, "limits": job.limits.__dict__}) + "\n")
        self.proc.stdin.flush()
        d = json.loads(self.proc.stdout.readline())
        return Outcome(**d)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _serve(cfg: dict) -> None:
    from harness.sandbox import Job, Limits
    from harness.sandbox.bwrap_backend import BwrapBackend
    try:
        be = BwrapBackend(limits=Limits(**cfg["limits"]), workers=cfg["workers"])
    except Exception as exc:   # noqa: BLE001 - reported to the test
        print(json.dumps({"error": str(exc)}), flush=True)
        return
    print(json.dumps({"uid": os.geteuid(), "isolation": be.isolation}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        o = be.run(Job(code=req["code"], limits=Limits(**req["limits"])))
        print(json.dumps(o.to_dict()), flush=True)
    be.close()


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
