"""The harness container (`make container` -> scicode-harness:latest).

Static tests check the Dockerfile, .dockerignore, README and build context. The
docker tests build the image offline through harness.build.container.build() and then:

* `nemo-evaluator ls` lists the four tasks; the tools and paths the launcher needs
  are there; /workspace is writable by any user;
* /opt/metadata/scicode/framework.yml is alone in an image layer under 100 KB
  (checked the way nemo-evaluator-launcher reads it, from the saved image);
* without a Docker socket, `auto` stops with a clear message and `process` works;
* the launcher-style dev self-test: the container gets only the Docker socket and
  a results directory (`--network host`). The reference endpoint (gold code)
  runs on the host, in this test process. As the launcher does, config_ef.yaml
  and pre_cmd.sh go in base64-encoded and are decoded in /workspace. pre_cmd.sh
  builds the dev targets inside the container from gold code in *sibling*
  sandboxes (nothing is passed in from the host). Then
  `nemo-evaluator run_eval --run_config config_ef.yaml` runs
  scicode.scicode_background with output_dir /results. The test expects 1.0 / 1.0
  in results.yml, the launcher's artifacts, and sandbox containers started from
  the pinned sandbox image on the host daemon.
"""
from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness.build import container as C

ROOT = Path(__file__).resolve().parent.parent
SOCKET = "/var/run/docker.sock"


# ---------------------------------------------------------------- static (no engine)

def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert "pip install --no-index --find-links" in text
    assert re.search(r"^WORKDIR /workspace$", text, re.M)
    assert "chmod 0777 /workspace" in text
    assert re.search(r"^ENV .*SCICODE_HARNESS_CACHE=/opt/scicode-cache", text, re.M)
    assert "data pull --from" in text and "data verify" in text
    # framework.yml is its own COPY (own layer), nothing else goes under /opt/metadata
    copies = [l for l in text.splitlines() if "/opt/metadata" in l and not l.lstrip().startswith("#")]
    assert copies == ["COPY core_evals/scicode/framework.yml /opt/metadata/scicode/framework.yml"]
    assert "container/README.md /workspace/README.md" in text


def test_dockerignore_keeps_venv_and_caches_out():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    assert not any(".venv" in l or "cache" in l.lower() for l in lines if l.startswith("!"))


def test_readme_lists_third_party_sources():
    text = (ROOT / "container" / "README.md").read_text()
    for needle in ("github.com/scicode-bench/SciCode", "nvidia-scicode==26.3", "xantheocracy/scicode-mirror",
                   "Apache-2.0", "NVIDIA-NeMo/Evaluator", "BSD-3-Clause", "root",
                   "/var/run/docker.sock", "sandbox=auto", "bubblewrap", "config_ef.yaml"):
        assert needle in text, needle


def test_listed_tasks_parses_nemo_evaluator_ls():
    out = "[I ...] Total harness packages discovered: 1\nscicode: \n  * scicode\n  * scicode_background\n" \
          "  * scicode_verified\n  * scicode_verified_background\n  * scicode_aa_v2\n  * aa_scicode\n"
    assert C.listed_tasks(out) == list(C.TASKS)


def test_prepare_context_is_small_and_complete(tmp_path):
    wheel = tmp_path / "scicode_harness-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"w")
    house = tmp_path / "house"
    house.mkdir()
    (house / "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"n")
    (house / "manifest.json").write_text("{}")
    data = {}
    for name in ("problems_dev.jsonl", "multistep_template.txt"):
        data[name] = tmp_path / name
        data[name].write_text("x")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    C.prepare_context(ctx, project_wheel=wheel, wheelhouse=house, data=data, test_data=None)
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    assert "Dockerfile" in files and "container/README.md" in files
    assert "core_evals/scicode/framework.yml" in files
    assert "sandbox_image/requirements.lock" in files
    assert "project/scicode_harness-0.1.0-py3-none-any.whl" in files
    assert "wheels/numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.whl" in files
    assert "data/problems_dev.jsonl" in files and "testdata/.keep" in files
    assert not any(f.startswith((".venv", "tests/", "harness/")) or "manifest.json" in f for f in files)
    small = sum((ctx / f).stat().st_size for f in files if not f.startswith(("wheels/", "project/", "data/")))
    assert small < 200_000


def test_inputs_digest_tracks_inputs(tmp_path):
    d1 = C.inputs_digest(base_id="a", deps_manifest={"x.whl": "1"}, data={}, test_data=None)
    assert d1 == C.inputs_digest(base_id="a", deps_manifest={"x.whl": "1"}, data={}, test_data=None)
    assert d1 != C.inputs_digest(base_id="b", deps_manifest={"x.whl": "1"}, data={}, test_data=None)
    assert d1 != C.inputs_digest(base_id="a", deps_manifest={"x.whl": "2"}, data={}, test_data=None)


# ---------------------------------------------------------------- docker

@pytest.fixture(scope="module")
def harness_image(docker_client):
    """Build (or reuse) scicode-harness:latest offline; returns the BuildResult."""
    lines = []
    res = C.build(progress=lines.append, client=docker_client)
    print(f"\nscicode-harness image {res.image_id[7:19]}: skipped={res.skipped} {res.seconds}s "
          f"{(res.size_bytes or 0) / 1e6:.0f} MB steps={res.steps}")
    return res


def _run(client, cmd, timeout=600, **kw):
    if isinstance(cmd, str):
        cmd = ["bash", "-c", cmd]
    return C.run_in_image(client, C.LATEST, cmd, timeout=timeout, **kw)


@pytest.mark.docker
def test_image_built_offline_tagged_and_labelled(docker_client, harness_image):
    img = docker_client.images.get(C.LATEST)
    assert img.id == harness_image.image_id
    labels = img.attrs["Config"]["Labels"]
    assert labels[C.LABEL_INPUTS] == harness_image.digest
    version = labels[C.LABEL_VERSION]
    assert f"{C.REPOSITORY}:{version}" in img.tags
    assert img.attrs["Config"]["WorkingDir"] == "/workspace"
    env = dict(e.split("=", 1) for e in img.attrs["Config"]["Env"])
    assert env["SCICODE_HARNESS_CACHE"] == "/opt/scicode-cache"
    assert not img.attrs["Config"].get("User"), "runs as root by default (Docker socket)"
    # nothing changed: the second call is a no-op that finds the image by its inputs label
    t0 = time.monotonic()
    again = C.build(progress=lambda _l: None, client=docker_client)
    assert again.skipped and again.image_id == harness_image.image_id
    assert time.monotonic() - t0 < 60


@pytest.mark.docker
def test_nemo_evaluator_ls_lists_the_six_tasks(docker_client, harness_image):
    rc, out, err = _run(docker_client, ["nemo-evaluator", "ls"])
    assert rc == 0, err
    assert C.listed_tasks(out + err) == list(C.TASKS)


@pytest.mark.docker
def test_tools_paths_and_offline_dataset(docker_client, harness_image):
    script = (
        "set -e; for t in nemo-evaluator scicode_eval scicode-harness bash base64 sed python3; do "
        "command -v $t >/dev/null || { echo missing $t; exit 3; }; done; "
        "python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'; "
        "test \"$(pwd)\" = /workspace; echo hi | base64 | base64 -d > probe && rm probe; "
        "test -f /workspace/README.md; test -s /opt/scicode-harness/THIRD_PARTY_PACKAGES.txt; "
        "test -f /opt/scicode-harness/sandbox_image/requirements.lock; "
        "scicode-harness data verify >/dev/null; "
        "python3 -c 'import nemo_evaluator.package_info as p; v = p.__version__; assert v.startswith(\"0.2.\"), v'; "
        "echo OK")
    # as the launcher may run it: an arbitrary uid, no network
    rc, out, err = _run(docker_client, script, user="4242:4242")
    assert rc == 0 and out.strip().endswith("OK"), out + err
    rc, out, err = _run(docker_client, "cat /opt/metadata/scicode/framework.yml")
    assert rc == 0 and out == (ROOT / "core_evals/scicode/framework.yml").read_text()


@pytest.mark.docker
def test_framework_yml_alone_in_a_small_metadata_layer(docker_client, harness_image):
    layers = C.metadata_layers(docker_client, C.LATEST)
    with_meta = [l for l in layers if l["metadata_files"]]
    assert [l["metadata_files"] for l in with_meta] == [["/opt/metadata/scicode/framework.yml"]], layers
    assert with_meta[0]["size"] < C.METADATA_LAYER_LIMIT


@pytest.mark.docker
def test_without_socket_auto_falls_back_and_process_works(docker_client, harness_image):
    from harness.data import dataset
    step = dataset.load_problems("dev")[0]["sub_steps"][0]["step_number"]
    # a default container may not create namespaces: no Docker, no bwrap, so process (said why)
    rc, out, err = _run(docker_client, "scicode-harness doctor | grep 'sandbox auto'")
    assert "sandbox auto: process (no Docker daemon answers" in out and "bwrap unavailable" in out, out + err
    rc, out, err = _run(docker_client, f"scicode-harness targets build --backend process --runs 1 "
                                        f"--step {step} --out /tmp/t.h5 && test -s /tmp/t.h5 && echo BUILT",
                        user="4242:4242")
    assert rc == 0 and "BUILT" in out, out + err


@pytest.mark.docker
def test_launcher_dry_run_renders_aa_v2(docker_client, harness_image):
    cfg = {"config": {"type": "scicode.scicode_aa_v2", "output_dir": "/results"},
           "target": {"api_endpoint": {"url": "http://127.0.0.1:9/v1/chat/completions",
                                       "model_id": "m", "type": "chat", "api_key_name": None}}}
    b64 = base64.b64encode(yaml.safe_dump(cfg).encode()).decode()
    rc, out, err = _run(docker_client, f"echo {b64} | base64 -d > config_ef.yaml && "
                                        "nemo-evaluator run_eval --run_config config_ef.yaml --dry_run",
                        user="4242:4242")
    assert rc == 0, out + err
    cmd = " ".join(out.split("Rendered command:")[-1].split())
    assert "scicode_eval" in cmd and "--n-samples=3" in cmd and "--output-dir /results" in cmd, cmd


def _watch_sandboxes(client, host_label, seen, stop):
    flt = {"label": ["org.scicode-harness.sandbox=1", f"org.scicode-harness.host={host_label}"]}
    while not stop.is_set():
        try:
            for c in client.api.containers(all=True, filters=flt):
                seen[c["Id"]] = c.get("ImageID") or c.get("Image")
        except Exception:  # noqa: BLE001 - best effort observer
            pass
        stop.wait(0.5)


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_launcher_style_dev_selftest_with_sibling_sandboxes(docker_client, harness_image, sandbox_image,
                                                            tmp_path):
    from harness.reference import make_server

    results = tmp_path / "results"
    results.mkdir()
    server = make_server("127.0.0.1", 0, mode="gold", split="dev")
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    config = {
        "config": {
            "type": "scicode.scicode_background",
            "output_dir": "/results",
            # 4g: the limit `targets build` runs gold code with; gold 10.11 needs more than 2g
            "params": {"parallelism": 4, "extra": {"split": "dev", "sandbox": "docker",
                                                   "sandbox_memory": "4g"}},
        },
        "target": {"api_endpoint": {"url": f"http://127.0.0.1:{port}/v1/chat/completions",
                                    "model_id": "scicode-reference-gold", "type": "chat",
                                    "api_key_name": None}},
    }
    # pre_cmd.sh: dev targets from gold code, in sibling sandboxes, into the image's cache
    # (targets_path("dev"), which the dev split uses when no test_data is given)
    pre_cmd = "scicode-harness targets build --split dev --backend docker --runs 1 || exit 1\n"
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    script = (
        f"echo {b64(yaml.safe_dump(config))} | base64 -d > config_ef.yaml && "
        f"echo {b64(pre_cmd)} | base64 -d > pre_cmd.sh && "
        "cmd=$(command -v nemo-evaluator >/dev/null 2>&1 && echo nemo-evaluator || echo eval-factory) && "
        "source pre_cmd.sh && $cmd run_eval --run_config config_ef.yaml; "
        "rc=$?; chmod 777 -R /results; exit $rc")

    # A hostname of its own: with --network host the container would otherwise share the
    # host's, and the sandbox owner labels (host + pid) would be ambiguous across pid namespaces.
    host_label = f"scicode-ct-{uuid.uuid4().hex[:8]}"
    seen: dict[str, str] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_sandboxes, args=(docker_client, host_label, seen, stop), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        rc, out, err = C.run_in_image(
            docker_client, C.LATEST, ["bash", "-c", script], timeout=3300,
            network_mode="host", hostname=host_label,
            volumes={SOCKET: {"bind": SOCKET, "mode": "rw"}, str(results): {"bind": "/results", "mode": "rw"}})
    finally:
        stop.set()
        watcher.join(5)
        server.shutdown()
    elapsed = time.monotonic() - t0
    log = out + "\n" + err
    (tmp_path / "container.log").write_text(log)
    assert rc == 0, log[-6000:]

    for name in ("results.yml", "eval_factory_metrics.json", "run_config.yml"):
        assert (results / name).is_file(), f"{name} missing; have {sorted(p.name for p in results.iterdir())}"
    res = yaml.safe_load((results / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
    steps = res["steps_pass@1"]["scores"]["steps_pass@1"]["value"]
    probs = res["problems_pass@1"]["scores"]["problems_pass@1"]["value"]
    assert (steps, probs) == (1.0, 1.0), log[-4000:]
    run_cfg = yaml.safe_load((results / "run_config.yml").read_text())
    assert run_cfg["config"]["type"] in ("scicode_background", "scicode.scicode_background")
    assert run_cfg["config"]["output_dir"] == "/results"

    # sandboxes ran as siblings on the host daemon, from the pinned sandbox image
    assert seen, "no sandbox container of the containerized run was seen on the host daemon"
    assert set(seen.values()) == {sandbox_image.id}, (set(seen.values()), sandbox_image.id)
    meta_text = "".join(p.read_text() for p in (results / "scicode_results").glob("*.json"))
    assert '"sandbox": "docker"' in meta_text
    print(f"\nlauncher-style dev run in the container: {elapsed:.0f}s, {len(seen)} sibling sandboxes")


# ---------------------------------------------------------------- nemo-evaluator-launcher

LAUNCHER = "nemo-evaluator-launcher==0.2.6"   # pinned; its own venv (it wants other versions of some deps)
# configs/launcher_local.yaml (also in container/README.md), with this test's paths and URL
LAUNCHER_FILE = ROOT / "configs" / "launcher_local.yaml"
LAUNCHER_EXAMPLE = {"/path/to/results": "{results}", "/path/to/dev.h5": "{dev_h5}",
                    "http://127.0.0.1:8011/v1/chat/completions": "{url}"}


def launcher_config() -> str:
    text = "".join(line for line in LAUNCHER_FILE.read_text().splitlines(keepends=True)
                   if not line.startswith("#"))
    for example, field in LAUNCHER_EXAMPLE.items():
        assert example in text, example
        text = text.replace(example, field)
    return text


@pytest.fixture(scope="session")
def launcher_bin():
    """nemo-evaluator-launcher in a venv of its own, kept in the harness cache."""
    import subprocess
    import sys
    from harness.util.paths import cache_dir
    venv = cache_dir() / ("launcher-" + LAUNCHER.split("==")[1])
    exe = venv / "bin" / "nemo-evaluator-launcher"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LAUNCHER], check=True, timeout=900)
    return exe


def test_container_readme_gives_the_tested_launcher_config():
    text = (ROOT / "container" / "README.md").read_text()
    assert launcher_config().format(results="/path/to/results", dev_h5="/path/to/dev.h5",
                                    url="http://127.0.0.1:8011/v1/chat/completions") in text
    for needle in ("NEMO_EVALUATOR_TRUST_UNLISTED_TASKS=1", LAUNCHER, "status"):
        assert needle in text, needle


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_launcher_local_executor_scores_gold_dev(launcher_bin, harness_image, sandbox_image, tmp_path):
    """NVIDIA's launcher, local executor, no deployment, our image, the gold reference endpoint
    on the host: results.yml holds 1.0 / 1.0 and `status` says success."""
    import json
    import os
    import subprocess
    from harness.reference import make_server
    from harness.util.paths import targets_path
    dev_h5 = targets_path("dev")
    if not dev_h5.is_file():
        from harness.targets.build import build
        assert build(split="dev", out=dev_h5, backend="docker", progress=None).ok

    server = make_server("127.0.0.1", 0, mode="gold", split="dev")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    results = tmp_path / "results"
    cfg = tmp_path / "launcher.yaml"
    cfg.write_text(launcher_config().format(results=results, dev_h5=dev_h5, url=url))
    env = dict(os.environ, HOME=str(tmp_path / "home"), MY_API_KEY="unused-by-the-reference",
               NEMO_EVALUATOR_TRUST_UNLISTED_TASKS="1", NEMO_EVALUATOR_TELEMETRY_LEVEL="0")
    nel = lambda *a, timeout=300: subprocess.run([str(launcher_bin), *a], capture_output=True,  # noqa: E731
                                                 text=True, timeout=timeout, env=env, cwd=tmp_path)
    try:
        p = nel("run", "--config", str(cfg))
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        inv = re.search(r"Invocation ID: ([0-9a-f]+)", p.stdout + p.stderr).group(1)
        deadline = time.monotonic() + 3000
        while True:
            st = nel("status", "--json", inv)
            jobs = json.loads(st.stdout[st.stdout.index("["):]) if "[" in st.stdout else []
            states = {j["status"] for j in jobs}
            if jobs and states <= {"success", "failed", "killed"}:
                break
            if time.monotonic() > deadline:
                nel("kill", inv)
                pytest.fail(f"launcher job not done in time: {st.stdout[-2000:]}")
            time.sleep(10)
    finally:
        server.shutdown()
    artifacts = next(results.glob("*/scicode.scicode_background.0/artifacts"))
    log = next(results.glob("*/scicode.scicode_background.0/logs/client_stdout.log")).read_text()
    assert states == {"success"}, log[-4000:]
    m = yaml.safe_load((artifacts / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
    assert m["steps_pass@1"]["scores"]["steps_pass@1"]["value"] == 1.0, log[-4000:]
    assert m["problems_pass@1"]["scores"]["problems_pass@1"]["value"] == 1.0
    data = json.loads(next((artifacts / "scicode_results").glob("*.json")).read_text())
    assert data["scored_steps"] == 50 and data["counts"]["pass"] == 50 and data["run"]["sandbox"] == "docker"
