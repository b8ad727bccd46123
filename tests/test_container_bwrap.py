"""The harness container without a Docker socket: `--sandbox auto` picks bwrap where the
container may create namespaces, and falls back with one line where it may not.

Gold dev (the reference endpoint on the host, `--network host`) must score 1.0/1.0 under bwrap
inside `docker run --security-opt seccomp=unconfined --security-opt systempaths=unconfined`
with no socket: as root (the whole split), as a non-root user, and as a non-root user inside
`unshare -Urm` (the user namespace enroot/pyxis put a job in; three problems each). In a default `docker run` (Docker's seccomp profile
refuses namespaces) auto says in one line that it fell back to process isolation, and the
results JSON records that candidates could read the targets file.
"""
import json
import os
import shutil
import subprocess

import pytest

from harness.build import container as C

pytestmark = pytest.mark.docker
UNCONFINED = ["--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined"]
# mode: docker run flags, command prefix, scicode_eval flags. Root runs the whole dev split; the
# non-root modes (whose whole-split runs are on the host, tests/test_bwrap_nonroot.py) run three
# multi-step problems: what they add is the tier picked inside the container (CI time)
SOME = "--problem-ids 19,78,47"
MODES = {"root": ([], "", ""), "user": (["--user", "1000:1000"], "", SOME),
         "unshare": (["--user", "1000:1000"], "unshare -Urm ", SOME)}
SPLIT = "===RESULTS==="


@pytest.fixture(scope="module")
def image(docker_client):
    repo = os.environ.get("SCICODE_TEST_HARNESS_REPOSITORY")   # a private tag for local runs
    if repo:
        C.REPOSITORY, C.LATEST = repo, f"{repo}:latest"
    return C.build(progress=lambda _l: None, client=docker_client).image_id


def docker_run(image, dev_targets, url, security, prefix="", extra=""):
    cli = shutil.which("docker")
    assert cli, "the docker CLI is needed (make setup installs docker.io)"
    script = (f"{prefix}scicode_eval --model gold --url {url} --split dev --test-data /data/dev.h5 "
              f"--output-dir /tmp/out --quiet --sandbox auto {extra}; rc=$?; echo {SPLIT}; "
              "cat /tmp/out/scicode_results/*.json; exit $rc")
    p = subprocess.run([cli, "run", "--rm", "--network", "host", *security,
                        "-v", f"{dev_targets}:/data/dev.h5:ro", image, "bash", "-c", script],
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(p.stdout.split(SPLIT, 1)[1]), p.stderr


@pytest.mark.parametrize("mode", list(MODES))
def test_gold_dev_under_bwrap_without_a_socket(image, dev_targets, gold_url, mode):
    flags, prefix, extra = MODES[mode]
    res, err = docker_run(image, dev_targets, gold_url, UNCONFINED + flags, prefix, extra)
    run = res["run"]
    print(f"\n{mode}: {run['sandbox_isolation']} {run['seconds']}s")
    assert (res["steps_pass@1"], res["problems_pass@1"]) == (1.0, 1.0)
    assert run["sandbox"] == "bwrap" and run["sandbox_isolation"]["tier"] == "bwrap", run
    assert run["sandbox_isolation"]["targets_readable"] is False
    assert [line for line in err.splitlines() if "sandbox auto:" in line] == \
        [f"scicode_eval: sandbox auto: bwrap ({run['sandbox_isolation']['why']})"], err


def test_default_docker_run_falls_back_to_process_with_one_line(image, dev_targets, gold_url):
    res, err = docker_run(image, dev_targets, gold_url, [], extra="--problem-ids 1")
    lines = [line for line in err.splitlines() if "sandbox auto:" in line]
    assert len(lines) == 1 and "process isolation only" in lines[0], err
    assert "no Docker daemon answers" in lines[0] and "bwrap unavailable" in lines[0], lines
    iso = res["run"]["sandbox_isolation"]
    assert iso["tier"] == "process" and iso["targets_readable"] is True, iso
    assert "the targets file included" in err.split(lines[0], 1)[1]   # said again at the end
    assert res["steps_pass@1"] == 1.0
