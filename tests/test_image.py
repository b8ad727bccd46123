"""The pinned sandbox image: lock, labels, contents, and the label check.

Docker tests build the image through harness.build.image.build(offline=True) when it is
missing or stale, so they work on a clean machine with an engine (and debootstrap).
"""
import hashlib
import json
import re

import pytest

from harness.build import image
from harness.sandbox import image_lookup
from harness.build.image import ImageError

TOP_LEVEL = ("numpy", "scipy", "sympy", "mpmath", "h5py", "matplotlib")


def _version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# ---------------------------------------------------------------- static (no engine)

def test_lock_pins_every_top_level_package_with_hashes():
    lock = image.parse_lock()
    for name in TOP_LEVEL:
        assert name in lock, f"{name} missing from requirements.lock"
    for name, (version, hashes) in lock.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (name, version)
        assert hashes, f"{name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
    assert lock["numpy"][0] == "1.26.4"
    assert (1, 11) <= _version_tuple(lock["scipy"][0])[:2] < (1, 14), "simps was removed in scipy 1.14"
    # matplotlib's runtime deps must be in the lock (it is the full closure)
    for dep in ("contourpy", "cycler", "fonttools", "kiwisolver", "packaging", "pillow",
                "pyparsing", "python-dateutil"):
        assert dep in lock, dep


def test_2025_lock_pins_the_verified_protocols_versions():
    lock = image.parse_lock(image.lock_path("2025"))
    want = {"numpy": "2.4.2", "scipy": "1.17.1", "sympy": "1.14.0", "h5py": "3.15.1", "matplotlib": "3.10.9"}
    assert {n: lock[n][0] for n in want} == want
    assert all(h for _, h in lock.values()), "every 2025 pin carries a hash"
    text = image.lock_path("2025").read_text().splitlines()
    for name in TOP_LEVEL:
        idx = next(i for i, line in enumerate(text) if line.startswith(f"{name}=="))
        assert text[idx - 1].startswith("# ") and len(text[idx - 1]) > 10, f"{name} pin has no reason comment"


def test_sandbox_envs_parse_and_refuse_in_one_line():
    from harness.sandbox.envs import EnvError, parse_envs
    assert parse_envs("2024") == ("2024",) and parse_envs(" 2025 , 2024") == ("2025", "2024")
    for bad in ("", "2023", "2024,2024", "2024;2025"):
        with pytest.raises(EnvError) as e:
            parse_envs(bad)
        assert "\n" not in str(e.value)


def test_lock_top_level_pins_carry_a_reason():
    text = image.lock_path().read_text().splitlines()
    for name in TOP_LEVEL:
        idx = next(i for i, line in enumerate(text) if line.startswith(f"{name}=="))
        assert text[idx - 1].startswith("# ") and len(text[idx - 1]) > 10, f"{name} pin has no reason comment"


def test_lock_digest_and_default_tag():
    digest = image.lock_digest()
    assert digest == hashlib.sha256(image.lock_path().read_bytes()).hexdigest()
    assert image.default_tag() == f"scicode-sandbox:{digest[:12]}"
    other = image.lock_digest(env="2025")
    assert other == hashlib.sha256(image.lock_path("2025").read_bytes()).hexdigest() != digest
    assert image.default_tag("2025") == f"scicode-sandbox:{other[:12]}"


def test_parse_lock_handles_continuations_and_comments(tmp_path):
    p = tmp_path / "r.lock"
    p.write_text("# header\nfoo-Bar==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "B" * 64
                 + "\n    # via x\n\nbaz==2.1 --hash=sha256:" + "c" * 64 + "\n")
    lock = image.parse_lock(p)
    assert lock == {"foo-bar": ("1.0", frozenset({"a" * 64, "b" * 64})), "baz": ("2.1", frozenset({"c" * 64}))}


def test_dockerfile_shape():
    text = image.DOCKERFILE_PATH.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert "--require-hashes" in text and "--no-index" in text and "--find-links" in text
    assert not re.search(r"^\s*(ENTRYPOINT|CMD)\b", text, re.M)
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M)
    assert "org.scicode-harness.lock-digest" in text and "org.scicode-harness.version" in text


# ---------------------------------------------------------------- docker

@pytest.fixture(scope="session")
def client():
    try:
        return image.docker_client(timeout=900)
    except ImageError as e:  # these tests must run, not skip
        pytest.fail(f"docker tests need an engine: {e}")


@pytest.fixture(scope="session")
def built(client):
    """The image for the current lock, built offline if missing or stale."""
    log = []
    try:
        image_id = image.build(offline=True, progress=log.append, client=client)
    except ImageError as e:
        pytest.fail(f"image build failed: {e}\n" + "\n".join(log[-30:]))
    return client.images.get(image_id)


def _run(client, ref, source):
    return image._run_short(client, ref, source)


@pytest.mark.docker
def test_image_exists_with_labels(client, built):
    found = image_lookup.find_image(client)
    assert found is not None and found.id == built.id
    latest = client.images.get(image.LATEST)
    assert latest.id == built.id
    assert image.default_tag() in built.tags
    labels = built.attrs["Config"]["Labels"]
    assert labels[image.LABEL_LOCK] == image.lock_digest()
    import harness
    assert labels[image.LABEL_VERSION] == harness.__version__
    assert not built.attrs["Config"].get("Entrypoint")


@pytest.mark.docker
def test_image_runs_as_non_root(client, built):
    user = built.attrs["Config"].get("User") or ""
    assert user and user.split(":")[0] not in ("0", "root")
    out = json.loads(_run(client, built.id, "import os, json; print(json.dumps([os.getuid(), os.getgid()]))"))
    assert out[0] != 0 and out[1] != 0


@pytest.mark.docker
def test_image_imports_and_versions_match_lock(client, built):
    src = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import numpy, scipy, sympy, mpmath, h5py, matplotlib\n"
        "from scipy.integrate import simps\n"
        "from mpl_toolkits.mplot3d import Axes3D\n"
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure(); ax = fig.add_subplot(projection='3d'); ax.plot([0, 1], [0, 1], [0, 1])\n"
        "fig.savefig('/tmp/p.png')\n"
        "with h5py.File('/tmp/t.h5', 'w') as f: f['x'] = numpy.arange(3)\n"
        "with h5py.File('/tmp/t.h5') as f: assert list(f['x'][()]) == [0, 1, 2]\n"
        "assert abs(simps(numpy.ones(5)) - 4.0) < 1e-12\n"
        "print(json.dumps({'python': sys.version_info[:2], 'exe': sys.executable,\n"
        "  'v': {m.__name__: m.__version__ for m in (numpy, scipy, sympy, mpmath, h5py, matplotlib)}}))\n"
    )
    out = json.loads(_run(client, built.id, src).strip().splitlines()[-1])
    assert out["python"] == [3, 11]
    assert out["exe"].startswith("/opt/venv/")
    locked = image.lock_versions()
    for name in TOP_LEVEL:
        assert out["v"][name] == locked[name], name


@pytest.mark.docker
def test_info_reports_every_locked_distribution(client, built):
    data = image.info(client=client)
    assert data["id"] == built.id
    assert data["lock_matches"] is True
    assert data["lock_digest"] == image.lock_digest()
    assert data["uid"] != 0 and data["python"].startswith("3.11.")
    assert data["lock_mismatches"] == {}
    for name, version in image.lock_versions().items():
        assert data["packages"][name] == version


@pytest.mark.docker
def test_build_is_a_noop_when_up_to_date(client, built):
    log = []
    assert image.build(offline=True, progress=log.append, client=client) == built.id
    assert any("up to date" in line for line in log), log


@pytest.mark.docker
def test_check_image_refuses_mismatching_lock_unless_explicit(client, built):
    assert image_lookup.check_image(client, image.LATEST, explicit=False).id == built.id
    import io
    tag = "scicode-sandbox-test:mismatch"
    dockerfile = f"FROM {built.id}\nLABEL {image.LABEL_LOCK}=0000deadbeef\n"
    other, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True,
                                   network_mode="none", pull=False)
    try:
        with pytest.raises(ImageError, match="different lock"):
            image_lookup.check_image(client, tag, explicit=False)
        assert image_lookup.check_image(client, tag, explicit=True).id == other.id
    finally:
        client.images.remove(other.id, force=True)
    with pytest.raises(ImageError, match="not found"):
        image_lookup.check_image(client, "scicode-sandbox-test:does-not-exist", explicit=True)


@pytest.mark.docker
def test_cli_info_json(built):
    from typer.testing import CliRunner

    from harness.cli.commands.image import app

    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["id"] == built.id and data["lock_matches"]


def test_cli_info_missing_image_is_one_line_error():
    from typer.testing import CliRunner

    from harness.cli.commands.image import app

    result = CliRunner().invoke(app, ["info", "--image", "scicode-sandbox-test:nope"])
    assert result.exit_code == 1
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")


@pytest.mark.docker
def test_build_path_end_to_end_with_a_mini_lock(client, built, tmp_path, monkeypatch):
    """Exercise wheelhouse reuse -> offline build -> smoke -> tags -> skip, on a
    one-wheel lock under a test repository (the real tags are not touched)."""
    import shutil

    real_lock = image.parse_lock()
    version, hashes = real_lock["cycler"]
    wheel = next(p for p in image.ensure_wheelhouse(lambda m: None).glob("cycler-*.whl"))
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# mini lock for the build-path test\ncycler=={version} \\\n"
                    + "".join(f"    --hash=sha256:{h}\n" for h in sorted(hashes)))
    dockerfile = tmp_path / "Dockerfile"
    shutil.copy2(image.DOCKERFILE_PATH, dockerfile)
    monkeypatch.setenv("SCICODE_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(image_lookup, "LOCK_PATH", lock)   # the lookup names the env's lock
    for module in (image, image_lookup):   # the build, and the lookup that names its image
        monkeypatch.setattr(module, "REPOSITORY", "scicode-sandbox-test")
    monkeypatch.setattr(image, "DOCKERFILE_PATH", dockerfile)
    monkeypatch.setattr(image, "LATEST", "scicode-sandbox-test:latest")
    monkeypatch.setattr(image, "SMOKE_SOURCE", "import cycler; print('ok')")
    digest = image.lock_digest()
    seeded = image.wheelhouse_dir(digest)
    seeded.mkdir(parents=True)
    shutil.copy2(wheel, seeded / wheel.name)  # so the test needs no index
    tag = image.default_tag()
    assert tag == f"scicode-sandbox-test:{digest[:12]}"
    try:
        log = []
        image_id = image.build(offline=True, progress=log.append, client=client)
        assert any("wheelhouse" in l and "complete" in l for l in log), log
        img = client.images.get(image_id)
        assert tag in img.tags and "scicode-sandbox-test:latest" in img.tags
        assert img.attrs["Config"]["Labels"][image.LABEL_LOCK] == digest
        assert image_lookup.check_image(client, tag, explicit=False).id == image_id
        log2 = []
        assert image.build(offline=True, progress=log2.append, client=client) == image_id
        assert any("up to date" in l for l in log2)
        # the install stage (wheels, pip) was pruned, so no dangling stage image is left
        assert not client.images.list(filters={"dangling": True, "label": f"{image.LABEL_STAGE}=install"})
    finally:
        for t in (tag, "scicode-sandbox-test:latest", "scicode-sandbox-test:2024"):
            try:
                client.images.remove(t, force=True)
            except Exception:
                pass
    # the real image still answers to the real lock
    monkeypatch.undo()
    assert image_lookup.check_image(client, image.LATEST, explicit=False).id == built.id


def test_a_new_wheelhouse_replaces_the_outdated_ones(tmp_path):
    from harness.util.paths import prune_siblings
    for name in ("old1", "old2", "new", ".staging-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.whl").write_text("x")
    (tmp_path / "note.txt").write_text("kept")
    gone = prune_siblings(tmp_path / "new")
    assert sorted(p.name for p in gone) == ["old1", "old2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging-x", "new", "note.txt"]


@pytest.mark.docker
def test_the_2025_image_holds_its_lock_and_lacks_simps(docker_client, sandbox_image_2025):
    data = image.info(client=docker_client, env="2025")
    assert data["lock_matches"] and data["env"] == "2025" and not data["lock_mismatches"]
    assert data["packages"]["numpy"] == "2.4.2" and data["packages"]["scipy"] == "1.17.1"
    assert "scicode-sandbox:2025" in data["tags"]
    assert image_lookup.find_image(docker_client, env="2025").id == sandbox_image_2025.id
    with pytest.raises(ImageError, match="different lock"):   # the 2024 label is not the 2025 lock
        image_lookup.check_image(docker_client, "scicode-sandbox:2025", explicit=False, env="2024")
