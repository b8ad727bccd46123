"""The harness container (`make container`): a NeMo Evaluator-compatible image.

    python -m harness.cli.container [--force] [--base-image NAME] [--with-test-data]

The top-level ``Dockerfile`` is built from a small temporary context that this
module assembles; the repository itself is never the context, so ``.venv``,
caches and results cannot leak in:

1. base: offline (default), the debootstrapped Debian bookworm shared with the
   sandbox image (:func:`harness.build.base.ensure_base`, ``scicode-base:bookworm-py311``);
   ``--base-image NAME`` uses a registry image such as ``python:3.11-slim-bookworm``;
2. project wheel: ``pip wheel --no-deps`` of a clean copy of the sources
   (pyproject.toml, README.md, harness/, core_evals/);
3. wheels: the sandbox image's hash-pinned wheelhouse (:func:`harness.build.image.ensure_wheelhouse`,
   installed first with ``--require-hashes``, so numpy/scipy/sympy/h5py/matplotlib
   in the harness venv are exactly the sandbox's and ``sandbox=process`` inside the
   container computes like the Docker sandbox), plus ``pip download`` of the
   project's dependencies, binary only, for CPython 3.11 manylinux x86_64,
   constrained to the sandbox lock's versions, into
   ``<cache>/container-wheelhouse/<key>``; reused while pyproject.toml and the
   lock are unchanged;
4. dataset: the SciCode files from the harness cache (pulled first when missing),
   re-hashed against their pins; with ``--with-test-data`` also test_data.h5;
5. ``docker build`` through the docker SDK with ``network_mode="none"``; the
   image is tagged ``scicode-harness:latest`` and ``scicode-harness:<version>``
   and labelled with a digest of every input, so an unchanged build is skipped
   (unless ``--force``).

Only steps 2-4 touch the network (pip, dataset pull), and only when their cached
results are missing; the image build itself is offline.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.build import common
from harness.build.common import Say, build_lock, flock, last_line
from harness.build.container_inputs import (DOCKERFILE, FRAMEWORK, README, SANDBOX_DIR, SANDBOX_FILES,
                                            bubblewrap_deb,
                                            ContainerError, _read_manifest, build_project_wheel,
                                            dataset_files, ensure_wheelhouse, inputs_digest,
                                            test_data_file, wheel_version, wheelhouse_dir)
from harness.sandbox.image_lookup import ImageError, _get, _labels
from harness.sandbox.envs import ENVS
from harness.util.paths import cache_dir

REPOSITORY = "scicode-harness"
LATEST = f"{REPOSITORY}:latest"
ONLINE_BASE = "python:3.11-slim-bookworm"
LABEL_INPUTS = "org.scicode-harness.container-inputs"
LABEL_VERSION = "org.scicode-harness.version"
LABEL_STAGE = "org.scicode-harness.stage"
STAGE_VALUE = "container-install"
METADATA_PREFIX = "opt/metadata/"
METADATA_LAYER_LIMIT = 100 * 1024   # nemo-evaluator-launcher only reads layers smaller than this
TASKS = ("scicode", "scicode_background", "scicode_verified", "scicode_verified_background", "scicode_aa_v2",
         "aa_scicode")


@dataclass
class BuildResult:
    image_id: str
    tags: list[str]
    digest: str
    skipped: bool
    seconds: float
    size_bytes: int | None = None
    steps: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- docker

def docker_client(timeout: int = 900):
    try:
        return common.docker_client(timeout=timeout)
    except ImageError as e:
        raise ContainerError(str(e)) from None


def ensure_base(client, base_image: str | None, progress: Say) -> tuple[str, str]:
    """(FROM reference, identity for the inputs digest). Offline: the shared debootstrap
    base from harness.build.image; otherwise the named registry image (pulled by the daemon)."""
    if base_image:
        img = _get(client, base_image)
        return base_image, (img.id if img is not None else base_image)
    from harness.build import base
    with build_lock():   # never debootstrap the shared base twice at the same time
        try:
            tag = base.ensure_base(client, progress)
        except ImageError as e:
            raise ContainerError(str(e)) from None
    return tag, client.images.get(tag).id


def find_built(client, digest: str):
    found = client.images.list(filters={"label": f"{LABEL_INPUTS}={digest}"})
    return found[0] if found else None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def sandbox_wheelhouse(progress: Say = print, env: str = "2024") -> Path:
    """A sandbox environment's hash-checked wheelhouse (downloaded by harness.build.image when missing)."""
    from harness.build import image
    with build_lock():   # shared with `scicode-harness image build`
        try:
            return image.ensure_wheelhouse(progress, env)
        except ImageError as e:
            raise ContainerError(str(e)) from None


def prepare_context(ctx: Path, *, project_wheel: Path, wheelhouse: Path, data: dict[str, Path],
                    test_data: Path | None, sandbox_wheels: Path | None = None,
                    env_wheels: dict[str, Path] | None = None, bwrap_deb: Path | None = None) -> None:
    """Lay out the build context the Dockerfile expects (see its header)."""
    for env, house in (env_wheels or {}).items():   # each sandbox environment's venv (bwrap)
        (ctx / "envwheels" / env).mkdir(parents=True)
        for p in house.glob("*.whl"):
            _link_or_copy(p, ctx / "envwheels" / env / p.name)
    (ctx / "debs").mkdir()
    if bwrap_deb is not None:
        _link_or_copy(bwrap_deb, ctx / "debs" / bwrap_deb.name)
    shutil.copy2(DOCKERFILE, ctx / "Dockerfile")
    (ctx / "container").mkdir()
    shutil.copy2(README, ctx / "container" / "README.md")
    (ctx / "core_evals" / "scicode").mkdir(parents=True)
    shutil.copy2(FRAMEWORK, ctx / "core_evals" / "scicode" / "framework.yml")
    (ctx / "sandbox_image").mkdir()
    for name in SANDBOX_FILES:
        if (SANDBOX_DIR / name).is_file():
            shutil.copy2(SANDBOX_DIR / name, ctx / "sandbox_image" / name)
    (ctx / "wheels").mkdir()
    (ctx / "project").mkdir()
    _link_or_copy(project_wheel, ctx / "project" / project_wheel.name)
    for house in (sandbox_wheels, wheelhouse):
        for p in (house.glob("*.whl") if house else ()):
            if not (ctx / "wheels" / p.name).exists():
                _link_or_copy(p, ctx / "wheels" / p.name)
    (ctx / "data").mkdir()
    for name, p in data.items():
        shutil.copy2(p, ctx / "data" / name)
    (ctx / "testdata").mkdir()
    (ctx / "testdata" / ".keep").write_text("")
    if test_data is not None:
        _link_or_copy(test_data, ctx / "testdata" / "test_data.h5")


def _stream_build(client, ctx: Path, tag: str, buildargs: dict, nocache: bool, progress: Say) -> str:
    image_id, error = None, None
    try:
        for chunk in client.api.build(path=str(ctx), tag=tag, buildargs=buildargs, rm=True, forcerm=True,
                                      network_mode="none", pull=False, nocache=nocache, decode=True):
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        progress("  " + line.rstrip())
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
            if "error" in chunk:
                error = chunk.get("error") or str(chunk.get("errorDetail"))
    except Exception as e:
        raise ContainerError(f"docker build failed: {last_line(str(e), type(e).__name__)}") from None
    if error:
        raise ContainerError(f"docker build failed: {last_line(error, 'unknown error')}")
    img = _get(client, tag)
    if img is None:
        raise ContainerError(f"docker build finished without producing {tag}")
    return image_id or img.id


def _prune_install_stages(client, keep: int = 1) -> None:
    """Remove the untagged install-stage images of earlier builds, keeping the newest
    ``keep``: its layers (the dependency venv) are the cache that makes the next build
    after a source change quick. Best effort."""
    with contextlib.suppress(Exception):
        stages = client.images.list(filters={"dangling": True, "label": f"{LABEL_STAGE}={STAGE_VALUE}"})
        stages.sort(key=lambda i: i.attrs.get("Created") or "", reverse=True)
        for img in stages[keep:]:
            with contextlib.suppress(Exception):
                client.images.remove(img.id)


def run_in_image(client, ref: str, command: list[str], timeout: float = 300.0, **kwargs) -> tuple[int, str, str]:
    """Run a throwaway container (network none unless overridden); (exit code, stdout, stderr)."""
    kwargs.setdefault("network_mode", "none")
    container = client.containers.create(ref, command, labels={"scicode.purpose": "container-check"}, **kwargs)
    try:
        container.start()
        rc = container.wait(timeout=timeout).get("StatusCode", 1)
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        return rc, out, err
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)


def listed_tasks(text: str) -> list[str]:
    """Task names from `nemo-evaluator ls` output (lines `  * name`)."""
    return [l.strip()[2:].strip() for l in text.splitlines() if l.strip().startswith("* ")]


def smoke(client, ref: str) -> list[str]:
    rc, out, err = run_in_image(client, ref, ["nemo-evaluator", "ls"])
    tasks = listed_tasks(out + "\n" + err)
    if rc != 0 or not set(TASKS) <= set(tasks):
        raise ContainerError(f"`nemo-evaluator ls` in {ref} failed (exit {rc}, tasks {tasks}): "
                             f"{last_line(err, 'no output')}")
    return tasks


def metadata_layers(client, ref: str) -> list[dict]:
    """Emulate nemo-evaluator-launcher's metadata lookup on the saved image: every layer,
    in order, with its size and, for layers under 100 KB, the files it holds below
    /opt/metadata. Returns [{"layer", "size", "metadata_files"}]."""
    img = client.images.get(ref)
    layers: dict[str, dict] = {}
    manifest = None
    stream = img.save(named=False)

    class _Reader(io.RawIOBase):
        def __init__(self, chunks):
            self._it, self._buf = iter(chunks), b""

        def readable(self):
            return True

        def readinto(self, b):
            while not self._buf:
                try:
                    self._buf = next(self._it)
                except StopIteration:
                    return 0
            n = min(len(b), len(self._buf))
            b[:n], self._buf = self._buf[:n], self._buf[n:]
            return n

    with tarfile.open(fileobj=io.BufferedReader(_Reader(stream), 1 << 20), mode="r|") as tar:
        for member in tar:
            name = member.name
            is_layer = name.endswith("/layer.tar") or (name.startswith("blobs/sha256/") and member.isfile())
            if name == "manifest.json":
                manifest = json.loads(tar.extractfile(member).read())
            elif is_layer and member.isfile():
                entry = {"layer": name, "size": member.size, "metadata_files": None}
                if member.size < METADATA_LAYER_LIMIT:
                    data = tar.extractfile(member).read()
                    try:
                        with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                            entry["metadata_files"] = sorted(
                                "/" + m.name.lstrip("./") for m in inner.getmembers()
                                if m.isfile() and m.name.lstrip("./").startswith(METADATA_PREFIX))
                    except tarfile.TarError:
                        entry["metadata_files"] = None   # a config blob, not a layer
                layers[name] = entry
    order = (manifest or [{}])[0].get("Layers") or list(layers)
    return [layers[n] for n in order if n in layers]


# ---------------------------------------------------------------- build

def build(force: bool = False, base_image: str | None = None, with_test_data: bool = False,
          progress: Say = print, client=None) -> BuildResult:
    """Build (or reuse) the harness container; tags scicode-harness:latest and :<version>."""
    t0 = time.monotonic()
    steps: dict[str, float] = {}
    client = client or docker_client()

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        steps[name] = round(now - since, 1)
        return now

    with flock(cache_dir() / "container-build.lock"):
        t = time.monotonic()
        base_ref, base_id = ensure_base(client, base_image, progress)
        t = lap("base", t)
        data = dataset_files(progress)
        test_data = test_data_file(progress) if with_test_data else None
        t = lap("data", t)
        with tempfile.TemporaryDirectory(prefix="scicode-container-") as tmp:
            tmp = Path(tmp)
            project_wheel = None
            wheelhouse = None
            if _read_manifest(wheelhouse_dir()) is None:   # cold: the wheel is needed to resolve deps
                project_wheel = build_project_wheel(tmp / "dist", progress)
            wheelhouse = ensure_wheelhouse(project_wheel, progress)
            manifest = _read_manifest(wheelhouse) or {}
            sandbox_wheels = sandbox_wheelhouse(progress)
            env_wheels = {env: sandbox_wheelhouse(progress, env) for env in ENVS}
            bwrap_deb = bubblewrap_deb(progress)
            t = lap("wheelhouse", t)
            digest = inputs_digest(base_id=base_id, deps_manifest=manifest, data=data, test_data=test_data,
                                   bwrap_deb=bwrap_deb)
            if not force:
                img = find_built(client, digest)
                if img is not None:
                    version = _labels(img).get(LABEL_VERSION) or "unknown"
                    tags = [LATEST, f"{REPOSITORY}:{version}"]
                    img.tag(REPOSITORY, "latest")
                    img.tag(REPOSITORY, version)
                    progress(f"{LATEST} is up to date ({img.short_id}, inputs {digest[:12]})")
                    return BuildResult(img.id, tags, digest, True, round(time.monotonic() - t0, 1),
                                       img.attrs.get("Size"), steps)
            if project_wheel is None:
                project_wheel = build_project_wheel(tmp / "dist", progress)
            version = wheel_version(project_wheel)
            t = lap("project_wheel", t)
            ctx = tmp / "context"
            ctx.mkdir()
            prepare_context(ctx, project_wheel=project_wheel, wheelhouse=wheelhouse, data=data,
                            test_data=test_data, sandbox_wheels=sandbox_wheels,
                            env_wheels=env_wheels, bwrap_deb=bwrap_deb)
            buildargs = {"BASE_IMAGE": base_ref, "HARNESS_VERSION": version, "INPUTS_DIGEST": digest}
            previous = _get(client, LATEST)
            progress(f"building {LATEST} from {base_ref} (network none, inputs {digest[:12]})")
            image_id = _stream_build(client, ctx, LATEST, buildargs, nocache=force, progress=progress)
            t = lap("docker_build", t)
        img = client.images.get(image_id)
        img.tag(REPOSITORY, version)
        _prune_install_stages(client)
        if previous is not None and previous.id != image_id:
            # the image this build replaced, once it has no tag left (kept while a container uses it)
            with contextlib.suppress(Exception):
                previous.reload()
                if not previous.tags:
                    client.images.remove(previous.id)
        smoke(client, image_id)
        lap("smoke", t)
        img.reload()
        seconds = round(time.monotonic() - t0, 1)
        progress(f"built {LATEST} and {REPOSITORY}:{version} ({image_id[7:19]}, "
                 f"{(img.attrs.get('Size') or 0) / 1e6:.0f} MB) in {seconds:.0f}s")
        return BuildResult(image_id, [LATEST, f"{REPOSITORY}:{version}"], digest, False, seconds,
                           img.attrs.get("Size"), steps)
