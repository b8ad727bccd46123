"""Gold dev under `--sandbox bwrap` with the whole harness run by a non-root user on the host,
plainly and inside `unshare -Urm` (the user namespace enroot/pyxis put a job in).

The user (`scicode-redteam`, made when missing) gets what a user who pip-installs us has: a venv of
Debian's python3 with this checkout installed (deps cached by pyproject's digest, the package
reinstalled from a copy of the tree every session), their own cache (a copy of the dev data), the
dev targets readable by them, and the built sandbox environments (`make envs`, world-readable in
/var/cache/scicode-harness/envs). Both runs must score 1.0/1.0 under the full bwrap tier, with
candidates unable to read the targets.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bwrap_driver import ensure_user

pytestmark = pytest.mark.docker   # the dev targets are regenerated in the Docker sandbox
ROOT = Path(__file__).resolve().parents[1]
VENV = Path("/opt/scicode-harness-nonroot")
MODES = {"user": [], "unshare": ["unshare", "-Urm"]}


def _run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert p.returncode == 0, " ".join(map(str, argv)) + "\n" + p.stdout[-2000:] + p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def user_install(tmp_path_factory):
    """(user, venv bin, home): the checkout installed for a non-root user."""
    if os.geteuid() != 0:
        pytest.skip("the harness already runs as a non-root user: every bwrap test is this case")
    assert shutil.which("bwrap") and Path("/usr/bin/python3").is_file(), "make setup installs bwrap"
    user = ensure_user()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    stamp = VENV / f".deps-{digest}"
    src = tmp_path_factory.mktemp("nonroot-src")
    top = {".git", ".venv", "build", ".hypothesis", ".pytest_cache", "bench", "docs"}   # at the top only
    shutil.copytree(ROOT, src / "tree", ignore=lambda d, names: [
        n for n in names if (d == str(ROOT) and n in top) or n == "__pycache__" or n.endswith(".egg-info")])
    if not stamp.is_file():
        shutil.rmtree(VENV, ignore_errors=True)
        _run(["/usr/bin/python3", "-m", "venv", str(VENV)], timeout=300)
        _run([str(VENV / "bin" / "pip"), "install", "-q", str(src / "tree")], timeout=900)
        stamp.touch()
    else:   # the deps are there: this tree's code only
        _run([str(VENV / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall",
              str(src / "tree")], timeout=300)
    site = next(VENV.glob("lib/python3*/site-packages"))
    for part in ("harness/build/image.py", "sandbox_image/requirements.lock", "sandbox_image/Dockerfile",
                 "harness/sandbox/seccomp-x86_64.bpf", "core_evals/scicode/framework.yml"):
        assert (site / part).is_file(), f"the installed package lacks {part}"
    home = Path(tempfile.mkdtemp(prefix="scicode-nonroot-", dir="/tmp"))   # not root's pytest dir (0700)
    from harness.sandbox.venvs import SYSTEM_ENVS, find_env, others_can_reach
    from harness.util.paths import cache_dir
    shutil.copytree(cache_dir() / "data", home / "cache" / "data")
    built = find_env("2024")
    assert built is not None, "make envs builds the sandbox environments"
    envs = built.parents[1]
    assert others_can_reach(envs), f"{envs} is out of the user's reach"
    if envs != SYSTEM_ENVS:   # the user's own cache would have them where root's cache is readable
        (home / "cache" / "envs").symlink_to(envs)
    os.chown(home, user.pw_uid, user.pw_gid)
    _run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(home)])
    home.chmod(0o700)
    yield user, VENV / "bin", home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_gold_dev_under_bwrap_as_a_non_root_user(user_install, dev_targets, gold_url, mode):
    user, bindir, home = user_install
    out = home / f"out-{mode}"
    targets = home / "dev.h5"
    shutil.copy(dev_targets, targets)
    os.chown(targets, user.pw_uid, user.pw_gid)
    argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            *MODES[mode], str(bindir / "scicode_eval"), "--model", "gold", "--url", gold_url,
            "--split", "dev", "--test-data", str(targets), "--output-dir", str(out), "--quiet",
            "--sandbox", "bwrap"]
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "SCICODE_HARNESS_CACHE": str(home / "cache"),
           "SCICODE_STEP_HISTORY": str(home / f"steps-{mode}.json")}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(home), timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    res = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    run = res["run"]
    print(f"\n{mode}: {run['sandbox_isolation']} {run['seconds']}s")
    assert (res["steps_pass@1"], res["problems_pass@1"]) == (1.0, 1.0)
    assert run["sandbox"] == "bwrap" and run["sandbox_isolation"]["tier"] == "bwrap", run
    assert run["sandbox_isolation"]["targets_readable"] is False
    assert out.stat().st_uid == user.pw_uid   # the harness really ran as the user
