"""What the harness container is made of: the project wheel, the wheelhouse of its dependencies,
the dataset files, and the digest over all of them that names a build (see harness.build.container)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.build.common import Say, last_line
from harness.build.image import PIP_PLATFORM_ARGS   # wheels for the image's CPython 3.11
from harness.errors import HarnessError
from harness.util.paths import cache_dir, prune_siblings, sha256_file

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "container" / "README.md"
FRAMEWORK = ROOT / "core_evals" / "scicode" / "framework.yml"
SANDBOX_DIR = ROOT / "sandbox_image"
# What goes into the project wheel (copied to a clean directory first).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "LICENSE", "harness", "core_evals")
SANDBOX_FILES = ("Dockerfile", "requirements.in", "requirements.lock", "requirements-2025.in", "requirements-2025.lock",
                 "update_lock.py")


class ContainerError(HarnessError, RuntimeError):
    """Building or inspecting the harness container failed; str(e) is one line for the user."""


# ---------------------------------------------------------------- hashing

def _ignored(p: Path) -> bool:
    return "__pycache__" in p.parts or p.suffix in (".pyc", ".pyo") or p.name.endswith(".egg-info") \
        or any(part.endswith(".egg-info") for part in p.parts)


def _tree_files(base: Path, items) -> list[Path]:
    """Regular files under base/items (sorted, relative), skipping caches and egg-info."""
    out = []
    for item in items:
        p = base / item
        if p.is_file():
            out.append(Path(item))
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(base)
                if f.is_file() and not _ignored(rel):
                    out.append(rel)
    return sorted(out)


def _tree_digest(base: Path, items) -> str:
    h = hashlib.sha256()
    for rel in _tree_files(base, items):
        h.update(str(rel).encode() + b"\0" + sha256_file(base / rel).encode() + b"\n")
    return h.hexdigest()


def source_digest() -> str:
    """sha256 over every source file that can end up in the project wheel."""
    return _tree_digest(ROOT, SOURCE_ITEMS)


# ---------------------------------------------------------------- wheels

def _pip() -> list[str]:
    return [sys.executable, "-m", "pip"]


def _run(cmd: list[str], what: str, progress: Say, cwd: Path | None = None) -> None:
    progress(f"{what}: {' '.join(cmd[:6])} ...")
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace")
    if proc.returncode != 0:
        errs = [l for l in proc.stdout.splitlines() if "error" in l.lower()]
        raise ContainerError(f"{what} failed (exit {proc.returncode}): "
                             f"{last_line(errs[-1] if errs else proc.stdout, 'no output')}")


def build_project_wheel(out_dir: Path, progress: Say = print) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the sources; returns the wheel path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scicode-harness-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for rel in _tree_files(ROOT, SOURCE_ITEMS):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        _run(_pip() + ["wheel", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
                       "-q", "-w", str(out_dir), str(src)], "project wheel", progress)
    wheels = sorted(out_dir.glob("scicode_harness-*.whl"))
    if len(wheels) != 1:
        raise ContainerError(f"expected one scicode_harness wheel in {out_dir}, found {len(wheels)}")
    return wheels[0]


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _wheelhouse_key() -> str:
    from harness.build import image
    h = hashlib.sha256()
    h.update((ROOT / "pyproject.toml").read_bytes())
    h.update(image.lock_digest().encode())
    h.update("\0".join(PIP_PLATFORM_ARGS).encode())
    return h.hexdigest()[:16]


def wheelhouse_dir() -> Path:
    return cache_dir() / "container-wheelhouse" / _wheelhouse_key()


def _read_manifest(directory: Path) -> dict[str, str] | None:
    """{wheel file name: sha256} when the wheelhouse is complete and intact, else None."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not manifest:
        return None
    for name, digest in manifest.items():
        p = directory / name
        if not p.is_file() or sha256_file(p) != digest:
            return None
    return manifest


def ensure_wheelhouse(project_wheel: Path | None, progress: Say = print) -> Path:
    """Dependency wheels (cp311 manylinux x86_64) for the project, downloaded once per
    pyproject.toml into the cache. ``project_wheel`` is only needed when downloading."""
    target = wheelhouse_dir()
    if _read_manifest(target) is not None:
        progress(f"dependency wheelhouse {target} complete")
        return target
    if project_wheel is None:
        raise ContainerError("the dependency wheelhouse is missing and no project wheel was given")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        from harness.build import image
        constraints = staging / "constraints.txt"   # the sandbox lock's versions, without hashes
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(image.lock_versions().items())))
        _run(_pip() + ["download", "--disable-pip-version-check", "--progress-bar", "off", "-q",
                       "-d", str(staging), *PIP_PLATFORM_ARGS, "-c", str(constraints), str(project_wheel)],
             "pip download of the dependencies", progress)
        for p in list(staging.iterdir()):
            if not p.name.endswith(".whl") or p.name.startswith("scicode_harness-"):
                p.unlink()
        manifest = {p.name: sha256_file(p) for p in sorted(staging.glob("*.whl"))}
        if not any(n.startswith("nemo_evaluator-0.2.") for n in manifest):
            raise ContainerError("the dependency wheelhouse has no nemo_evaluator 0.2.x wheel")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        for old in prune_siblings(target):   # one wheelhouse per lock: drop the others
            progress(f"removed the outdated wheelhouse {old}")
        progress(f"dependency wheelhouse {target}: {len(manifest)} wheels")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- data

def dataset_files(progress: Say = print) -> dict[str, Path]:
    """{name: verified path} of the SciCode files in the harness cache (pulled when missing)."""
    from harness.data import dataset
    try:
        directory = dataset.data_dir(require=True)
    except dataset.DataError:
        progress("the SciCode dataset is not cached yet: scicode-harness data pull")
        try:
            dataset.pull(progress=progress)
            directory = dataset.data_dir(require=True)
        except dataset.DataError as e:
            raise ContainerError(f"cannot get the SciCode dataset: {e}") from None
    out = {}
    for name, pinned in dataset.FILES.items():
        p = Path(directory) / name
        if not p.is_file():
            if name in dataset.OPTIONAL_FILES:
                progress(f"note: {name} is not cached; the image will lack it "
                         f"(scicode_aa_v2 needs it: `scicode-harness data pull --source pypi`)")
                continue
            raise ContainerError(f"{name} is missing from {directory}: run `scicode-harness data pull`")
        if sha256_file(p) != pinned:
            raise ContainerError(f"{p}: sha256 mismatch; run `scicode-harness data pull --force`")
        out[name] = p
    return out


def test_data_file(progress: Say = print) -> Path:
    """The verified cached test_data.h5 (downloaded when missing)."""
    from harness.data import testdata
    p = testdata.default_path()
    try:
        if p.is_file():
            testdata.verify_test_data(p)
            return p
        progress("test_data.h5 is not cached yet: downloading it (about 1 GB)")
        return Path(testdata.pull_test_data(progress=progress))
    except testdata.TestDataError as e:
        raise ContainerError(f"test_data.h5: {e}") from None


def bubblewrap_deb(progress) -> Path:
    """Debian's bubblewrap package for the container (its --sandbox bwrap): from the cache, else
    apt's archive (it is installed here), else `apt-get download`."""
    import glob
    import subprocess
    debs = cache_dir() / "debs"
    found = sorted(debs.glob("bubblewrap_*.deb")) or [Path(p) for p in
                                                      sorted(glob.glob("/var/cache/apt/archives/bubblewrap_*.deb"))]
    if found:
        return found[-1]
    debs.mkdir(parents=True, exist_ok=True)
    progress("downloading Debian's bubblewrap package for the container")
    p = subprocess.run(["apt-get", "download", "bubblewrap"], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob("bubblewrap_*.deb"))
    if p.returncode != 0 or not found:
        raise ContainerError("the container ships bubblewrap: `apt-get download bubblewrap` failed "
                             f"({(p.stderr.strip().splitlines() or ['no output'])[-1]})")
    return found[-1]


def inputs_digest(*, base_id: str, deps_manifest: dict[str, str], data: dict[str, Path],
                  test_data: Path | None, bwrap_deb: Path | None = None) -> str:
    """sha256 over everything the image is made of."""
    from harness.data import dataset, testdata
    parts = {
        "dockerfile": sha256_file(DOCKERFILE),
        "readme": sha256_file(README),
        "framework": sha256_file(FRAMEWORK),
        "sandbox_image": _tree_digest(SANDBOX_DIR, SANDBOX_FILES),
        "source": source_digest(),
        "deps": deps_manifest,
        "data": {n: dataset.FILES[n] for n in sorted(data)},
        "test_data": testdata.TEST_DATA_SHA256 if test_data else None,
        "base": base_id,
        "bubblewrap": sha256_file(bwrap_deb) if bwrap_deb else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
