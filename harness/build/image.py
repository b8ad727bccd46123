"""The pinned sandbox image: lock digest, offline base, wheelhouse, build, inspection.

The image is ``sandbox_image/Dockerfile`` installed from ``sandbox_image/requirements.lock``
(every wheel pinned by sha256). It is identified by the label
``org.scicode-harness.lock-digest`` = sha256 of the lock file, and tagged
``scicode-sandbox:<first 12 of that digest>`` and ``scicode-sandbox:latest``.

Offline build (no container registry needed):

1. base: Debian bookworm made with ``debootstrap --variant=minbase`` (python3 3.11 +
   python3-venv), imported as ``scicode-base:bookworm-py311``; reused when present (harness.build.base);
2. wheelhouse: ``pip download`` of the lock on the host into
   ``<cache>/wheelhouse/<lock digest>``; reused when every hash is present;
3. ``docker build`` through the SDK with ``network_mode="none"``.

Docker is driven only through the docker SDK; subprocess is used for debootstrap,
tar and pip. Every failure raises :class:`ImageError` with a one-line message.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness.build.base import LABEL_BASE, ensure_base
from harness.build.common import Say, build_lock, docker_client, last_line, run_streaming
from harness.util.paths import cache_dir, prune_siblings, sha256_file
from harness.sandbox.envs import DEFAULT_ENV, SMOKE_SOURCE as ENV_SMOKE
from harness.sandbox.image_lookup import (IMAGE_DIR, LABEL_LOCK, REPOSITORY, ImageError, _get, _labels,
                                          default_tag, env_tag, lock_digest, lock_path)

DOCKERFILE_PATH = IMAGE_DIR / "Dockerfile"

LATEST = f"{REPOSITORY}:latest"
ONLINE_BASE = "python:3.11-slim-bookworm"

LABEL_VERSION = "org.scicode-harness.version"
LABEL_RECIPE = "org.scicode-harness.recipe-digest"
LABEL_STAGE = "org.scicode-harness.stage"  # only on the Dockerfile's throwaway install stage

# Wheels for the image's interpreter, whatever the host runs.
PIP_PLATFORM_ARGS = (
    "--only-binary=:all:",
    "--platform", "manylinux_2_28_x86_64",
    "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
)

# Top-level modules the 2024 image must import (checked after every build); each env has its own.
SMOKE_SOURCE = ENV_SMOKE[DEFAULT_ENV]

# Printed as one JSON line by `info`; reads installed distributions without importing them.
VERSIONS_SOURCE = (
    "import json, os, platform, re, sys\n"
    "from importlib import metadata\n"
    "pk = {}\n"
    "for d in metadata.distributions():\n"
    "    n = d.metadata['Name']\n"
    "    if n: pk[re.sub(r'[-_.]+', '-', n).lower()] = d.version\n"
    "print(json.dumps({'python': platform.python_version(), 'executable': sys.executable,\n"
    "                  'uid': os.getuid(), 'gid': os.getgid(), 'packages': pk}, sort_keys=True))\n"
)


# ---------------------------------------------------------------- lock

def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def recipe_digest(env: str = DEFAULT_ENV) -> str:
    """sha256 over the Dockerfile and the environment's lock: rebuild when either changes."""
    h = hashlib.sha256()
    for p in (DOCKERFILE_PATH, lock_path(env)):
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read {p}: {e.strerror or e}") from None
        h.update(p.name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def parse_lock(path: Path | str | None = None) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, {sha256 hex})} from a hashed pip lock."""
    p = Path(path) if path else lock_path()
    text = p.read_text()
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            if buf:
                logical.append(buf)
                buf = ""
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
        else:
            logical.append(buf + line)
            buf = ""
    if buf:
        logical.append(buf)
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for line in logical:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;\\]+)", line)
        if not m:
            continue
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-fA-F]{64})", line))
        out[_canon(m.group(1))] = (m.group(2), frozenset(h.lower() for h in hashes))
    return out


def lock_versions(env: str = DEFAULT_ENV) -> dict[str, str]:
    """{canonical name: version} pinned by the environment's lock."""
    return {n: v for n, (v, _) in parse_lock(lock_path(env)).items()}


# ---------------------------------------------------------------- wheelhouse

def wheelhouse_dir(digest: str | None = None, env: str = DEFAULT_ENV) -> Path:
    """<cache>/wheelhouse/<env>/<lock digest>: one wheelhouse per environment's current lock."""
    return cache_dir() / "wheelhouse" / env / (digest or lock_digest(env=env))


def _wheelhouse_missing(directory: Path, lock: dict) -> list[str]:
    """Names whose pinned wheel (by hash) is not in directory."""
    if not directory.is_dir():
        return sorted(lock)
    present = {sha256_file(p) for p in directory.glob("*.whl")}
    return sorted(n for n, (_, hashes) in lock.items() if not (hashes & present))


def _pip_command() -> list[str]:
    candidates = [[sys.executable, "-m", "pip"]]
    for exe in ("pip3", "pip"):
        if shutil.which(exe):
            candidates.append([shutil.which(exe)])
    for cand in candidates:
        try:
            if subprocess.run(cand + ["--version"], capture_output=True, timeout=60).returncode == 0:
                return cand
        except (OSError, subprocess.TimeoutExpired):
            continue
    raise ImageError("pip is not available to download the wheelhouse (python3 -m pip failed)")


def ensure_wheelhouse(progress: Say = print, env: str = DEFAULT_ENV) -> Path:
    """Download (or reuse) every wheel of the environment's lock, hash-checked, into the cache."""
    lock_file = lock_path(env)
    digest = lock_digest(env=env)
    lock = parse_lock(lock_file)
    if not lock:
        raise ImageError(f"the lock file {lock_file} pins nothing")
    unhashed = sorted(n for n, (_, h) in lock.items() if not h)
    if unhashed:
        raise ImageError(f"the lock file pins without --hash: {', '.join(unhashed)}")
    target = wheelhouse_dir(digest, env)
    if not _wheelhouse_missing(target, lock):
        progress(f"wheelhouse {target} complete ({len(lock)} wheels)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    try:
        if target.is_dir():  # keep what is already there
            for p in target.glob("*.whl"):
                shutil.copy2(p, staging / p.name)
        cmd = _pip_command() + ["download", "--disable-pip-version-check", "--no-deps",
                                "--require-hashes", "--progress-bar", "off", "-d", str(staging),
                                *PIP_PLATFORM_ARGS, "-r", str(lock_file)]
        progress(f"downloading {len(lock)} wheels into {target}")
        rc, tail = run_streaming(cmd, progress, prefix="  pip: ")
        if rc != 0:
            errs = [l for l in tail.splitlines() if "ERROR" in l or "error" in l.lower()]
            raise ImageError(f"pip download of the lock failed (exit {rc}): "
                             f"{last_line(errs[-1] if errs else tail, 'no output')}")
        for p in staging.iterdir():
            if not p.name.endswith(".whl"):
                p.unlink()
        missing = _wheelhouse_missing(staging, lock)
        if missing:
            raise ImageError(f"wheelhouse incomplete after pip download: {', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        for old in prune_siblings(target):   # one wheelhouse per lock: drop the others
            progress(f"removed the outdated wheelhouse {old}")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- build

def _prepare_context(directory: Path, wheelhouse: Path, env: str = DEFAULT_ENV) -> None:
    shutil.copy2(DOCKERFILE_PATH, directory / "Dockerfile")
    shutil.copy2(lock_path(env), directory / "requirements.lock")
    wheels = directory / "wheels"
    wheels.mkdir()
    for p in wheelhouse.glob("*.whl"):
        try:
            os.link(p, wheels / p.name)
        except OSError:
            shutil.copy2(p, wheels / p.name)


def _stream_build(client, context: Path, buildargs: dict, nocache: bool, progress: Say) -> str:
    """Build the context untagged (tags are applied after the smoke test); return the image id."""
    image_id = None
    error = None
    try:
        for chunk in client.api.build(path=str(context), buildargs=buildargs, rm=True,
                                      forcerm=True, network_mode="none", pull=False, nocache=nocache,
                                      decode=True):
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        progress("  " + line.rstrip())
                    m = re.match(r"Successfully built ([0-9a-f]{12,64})\s*$", line.strip())
                    if m and not image_id:
                        image_id = m.group(1)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                error = chunk.get("error") or str(chunk.get("errorDetail"))
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"docker build failed: {last_line(str(e), type(e).__name__)}") from None
    if error:
        raise ImageError(f"docker build failed: {last_line(error, 'unknown error')}")
    img = _get(client, image_id) if image_id else None
    if img is None:
        raise ImageError("docker build finished without reporting an image id")
    return img.id


def _run_short(client, image: str, source: str, timeout: float = 120.0) -> str:
    """Run ``python3 -c source`` in a locked-down throwaway container; return stdout."""
    container = client.containers.create(
        image, ["python3", "-c", source], network_mode="none", read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], labels={"scicode.purpose": "image-info"})
    try:
        container.start()
        result = container.wait(timeout=timeout)
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        if result.get("StatusCode", 1) != 0:
            err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            raise ImageError(f"python3 in {image} failed: {last_line(err, 'exit %s' % result.get('StatusCode'))}")
        return out
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"running a container from {image} failed: {last_line(str(e), type(e).__name__)}") from None
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)


def _prune_install_stage(client) -> None:
    """Drop the untagged install-stage image (wheels + pip cache layers); best effort."""
    with contextlib.suppress(Exception):
        client.images.prune(filters={"dangling": True, "label": f"{LABEL_STAGE}=install"})


def _moving_tags(env: str) -> list[str]:
    """The tags that follow the newest build: ``<env>``, and ``latest`` for the default env."""
    return [env] + (["latest"] if env == DEFAULT_ENV else [])


def build(offline: bool = True, force: bool = False, progress: Say = print, client=None,
          env: str = DEFAULT_ENV) -> str:
    """Build (or reuse) the sandbox image for the environment's current lock; return its image id.

    Skips when an image with this lock's tag already carries the same lock- and
    recipe-digest labels (unless ``force``). Offline, the base is a debootstrapped
    bookworm; otherwise ``python:3.11-slim-bookworm`` (pulled by the daemon).
    Tags ``scicode-sandbox:<digest12>`` and ``scicode-sandbox:<env>`` (2024 also ``latest``).
    """
    client = client or docker_client(timeout=900)
    digest, recipe, tag = lock_digest(env=env), recipe_digest(env), default_tag(env)
    moving = ", ".join(f"{REPOSITORY}:{t}" for t in _moving_tags(env))
    t0 = time.monotonic()
    with build_lock():
        if not force:
            img = _get(client, tag)
            if img is not None and _labels(img).get(LABEL_LOCK) == digest \
                    and _labels(img).get(LABEL_RECIPE) == recipe:
                for t in _moving_tags(env):
                    img.tag(REPOSITORY, t)
                progress(f"{tag} is up to date ({img.short_id}); tagged {moving}")
                return img.id
        previous = _get(client, tag)
        base = ensure_base(client, progress) if offline else ONLINE_BASE
        wheelhouse = ensure_wheelhouse(progress, env)
        buildargs = {"BASE_IMAGE": base, "LOCK_DIGEST": digest, "RECIPE_DIGEST": recipe,
                     "HARNESS_VERSION": harness.__version__}
        progress(f"building {tag} from {base} (network none)")
        with tempfile.TemporaryDirectory(prefix="scicode-image-ctx-",
                                         dir=str(wheelhouse.parent)) as ctx:
            _prepare_context(Path(ctx), wheelhouse, env)
            image_id = _stream_build(client, Path(ctx), buildargs, nocache=force, progress=progress)
        try:
            out = _run_short(client, image_id, SMOKE_SOURCE if env == DEFAULT_ENV else ENV_SMOKE[env])
            if "ok" not in out:
                raise ImageError(f"the built image {image_id[7:19]} failed its import smoke test")
        except ImageError:
            with contextlib.suppress(Exception):
                client.images.remove(image_id, force=True)
            _prune_install_stage(client)
            raise
        built = client.images.get(image_id)
        built.tag(REPOSITORY, tag.split(":", 1)[1])
        for t in _moving_tags(env):
            built.tag(REPOSITORY, t)
        _prune_install_stage(client)
        if previous is not None and previous.id != image_id:
            # the superseded build is now untagged; drop it unless a container still uses it
            with contextlib.suppress(Exception):
                client.images.remove(previous.id)
        progress(f"built {tag} ({image_id[7:19]}) and tagged {moving} in {time.monotonic() - t0:.0f}s")
        return image_id


# ---------------------------------------------------------------- info

def info(tag: str | None = None, client=None, env: str = DEFAULT_ENV) -> dict:
    """Describe an environment's image: id, tags, labels, size, Python and package versions
    (read by a short ``python3 -c`` container with network none)."""
    client = client or docker_client()
    ref = tag or default_tag(env)
    img = _get(client, ref)
    if img is None and tag is None:
        ref, img = env_tag(env), _get(client, env_tag(env))
    if img is None:
        raise ImageError(f"sandbox image {ref} not found; build it with `scicode-harness image build --env {env}`")
    labels = _labels(img)
    raw = _run_short(client, img.id, VERSIONS_SOURCE)
    try:
        runtime = json.loads(raw.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ImageError(f"could not read package versions from {ref}") from None
    locked = lock_versions(env)
    mismatched = {n: {"lock": v, "image": runtime["packages"].get(n)}
                  for n, v in locked.items() if runtime["packages"].get(n) != v}
    return {
        "ref": ref,
        "id": img.id,
        "tags": sorted(img.tags),
        "created": img.attrs.get("Created"),
        "size_bytes": img.attrs.get("Size"),
        "user": (img.attrs.get("Config") or {}).get("User"),
        "lock_digest": labels.get(LABEL_LOCK),
        "version": labels.get(LABEL_VERSION),
        "recipe_digest": labels.get(LABEL_RECIPE),
        "base": labels.get(LABEL_BASE),
        "env": env,
        "lock_matches": labels.get(LABEL_LOCK) == lock_digest(env=env),
        "python": runtime.get("python"),
        "uid": runtime.get("uid"),
        "gid": runtime.get("gid"),
        "packages": {n: runtime["packages"][n] for n in sorted(runtime["packages"])},
        "lock_mismatches": mismatched,
    }
