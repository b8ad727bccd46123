"""Which sandbox image a run uses: the lock digest that names it, and the lookup and check of it.

Each sandbox environment (harness.sandbox.envs) has one lock: ``sandbox_image/requirements.lock``
for 2024, ``sandbox_image/requirements-<env>.lock`` for the others. The build (harness.build.image)
labels the image with ``org.scicode-harness.lock-digest`` = sha256 of that lock and tags it
``scicode-sandbox:<first 12 of that digest>`` and ``scicode-sandbox:<env>``; the Docker backend
finds it here at run time, so the sandbox never imports the build tooling.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import HarnessError
from harness.sandbox.envs import DEFAULT_ENV
from harness.util.paths import sandbox_image_dir

IMAGE_DIR = sandbox_image_dir(Path(__file__).resolve().parents[2] / "sandbox_image")
LOCK_PATH = IMAGE_DIR / "requirements.lock"
REPOSITORY = "scicode-sandbox"
LABEL_LOCK = "org.scicode-harness.lock-digest"


class ImageError(HarnessError, RuntimeError):
    """A sandbox-image operation failed; str(e) is one line meant for the user."""


def lock_path(env: str = DEFAULT_ENV) -> Path:
    """The hashed lock of a sandbox environment."""
    return LOCK_PATH if env == DEFAULT_ENV else IMAGE_DIR / f"requirements-{env}.lock"


def lock_digest(path: Path | str | None = None, env: str = DEFAULT_ENV) -> str:
    """sha256 (hex) of the environment's lock: the image's identity label."""
    p = Path(path) if path else lock_path(env)
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as e:
        raise ImageError(f"cannot read the lock file {p}: {e.strerror or e}") from None


def default_tag(env: str = DEFAULT_ENV) -> str:
    """``scicode-sandbox:<first 12 hex of the environment's lock digest>``."""
    return f"{REPOSITORY}:{lock_digest(env=env)[:12]}"


def env_tag(env: str) -> str:
    """``scicode-sandbox:<env>``: the environment's moving tag."""
    return f"{REPOSITORY}:{env}"


def _get(client, ref):
    from docker.errors import ImageNotFound, NotFound
    try:
        return client.images.get(ref)
    except (ImageNotFound, NotFound):
        return None


def find_image(client, tag: str | None = None, env: str = DEFAULT_ENV):
    """The image for ``tag`` (default: the environment's lock tag, else any image labelled
    with that lock's digest), or None."""
    if tag:
        return _get(client, tag)
    img = _get(client, default_tag(env))
    if img is not None:
        return img
    found = client.images.list(filters={"label": f"{LABEL_LOCK}={lock_digest(env=env)}"})
    return found[0] if found else None


def _labels(image) -> dict:
    return (image.attrs.get("Config") or {}).get("Labels") or {}


def check_image(client, ref: str, explicit: bool, env: str = DEFAULT_ENV):
    """Return the image ``ref``; raise ImageError when it is missing, or when its
    lock-digest label differs from the environment's :func:`lock_digest` unless ``explicit``
    (the user named the image on purpose, e.g. ``--sandbox-image``)."""
    img = _get(client, ref)
    if img is None:
        hint = "" if explicit else f"; build it with `scicode-harness image build --env {env}`"
        raise ImageError(f"sandbox image {ref} not found{hint}")
    want = lock_digest(env=env)
    have = _labels(img).get(LABEL_LOCK)
    if have != want and not explicit:
        shown = have[:12] if have else "missing"
        raise ImageError(
            f"sandbox image {ref} was built from a different lock (lock-digest {shown}, "
            f"expected {want[:12]}); run `scicode-harness image build --env {env}` or pass --sandbox-image "
            "to use it anyway")
    return img
