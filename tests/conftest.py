"""Shared fixtures. Tests marked `docker` need a real engine: they fail (never skip)
when none answers, because `make test` / `.ci/run` start one first."""
import os

import pytest


@pytest.fixture(autouse=True)
def own_step_history(tmp_path, monkeypatch):
    """Every test (and every scicode_eval it starts) keeps its own step-duration history,
    so toy durations never reach the user's cache and no test depends on what is there."""
    monkeypatch.setenv("SCICODE_STEP_HISTORY", str(tmp_path / "step_seconds.json"))


@pytest.fixture(scope="session")
def docker_client():
    import docker
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"Docker engine not reachable ({e}); run `bash scripts/ensure-docker.sh` or `make setup`")
    return client


@pytest.fixture(scope="session")
def sandbox_image(docker_client):
    """The pinned sandbox image, built offline if missing."""
    from harness.build import image
    from harness.sandbox.image_lookup import find_image
    found = find_image(docker_client)
    if found is None:
        image.build(offline=True)
        found = find_image(docker_client)
    assert found is not None, "sandbox image missing after build"
    return found


@pytest.fixture(scope="session")
def sandbox_image_2025(docker_client):
    """The 2025-era sandbox image (numpy 2.4, scipy 1.17), built offline if missing."""
    from harness.build import image
    from harness.sandbox.image_lookup import find_image
    found = find_image(docker_client, env="2025")
    if found is None:
        image.build(offline=True, env="2025")
        found = find_image(docker_client, env="2025")
    assert found is not None, "2025 sandbox image missing after build"
    return found


@pytest.fixture(scope="session")
def dev_problems():
    """The verified dev split, pulled into the cache if missing."""
    from harness.data import dataset
    try:
        return dataset.load_problems("dev")
    except dataset.DataError:
        dataset.pull()
        return dataset.load_problems("dev")


@pytest.fixture(scope="session")
def dev_targets(sandbox_image):
    """The dev targets regenerated from gold code in the sandbox (the cache's), built if missing."""
    from harness.util.paths import targets_path
    path = targets_path("dev")
    if not path.is_file():
        from harness.targets.build import build
        rep = build(split="dev", out=path, backend="docker", progress=None)
        assert rep.ok, rep.summary()
    return path


@pytest.fixture(scope="session")
def gold_url():
    """The gold reference endpoint for the dev split, on the host's loopback, for the session."""
    import threading
    from harness.reference import make_server
    server = make_server("127.0.0.1", 0, mode="gold", split="dev")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    """An empty harness cache for tests that must not touch the user's."""
    monkeypatch.setenv("SCICODE_HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SCICODE_SKIP_DOCKER") == "1":  # explicit opt-out, reported by pytest
        skip = pytest.mark.skip(reason="SCICODE_SKIP_DOCKER=1")
        for item in items:
            if "docker" in item.keywords:
                item.add_marker(skip)
