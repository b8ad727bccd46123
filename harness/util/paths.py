"""Where the harness keeps its cache (dataset, wheelhouse, targets)."""
import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

ENV_CACHE = "SCICODE_HARNESS_CACHE"
ENV_STEP_HISTORY = "SCICODE_STEP_HISTORY"   # another file for the step-duration history (tests use their own)
STEP_HISTORY_FILE = "step_seconds.json"
ENV_IMAGE_DIR = "SCICODE_HARNESS_IMAGE_DIR"   # another sandbox image recipe (Dockerfile + lock)


def cache_dir() -> Path:
    """$SCICODE_HARNESS_CACHE, else $XDG_CACHE_HOME/scicode-harness, else ~/.cache/scicode-harness."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scicode-harness"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def step_history_path() -> Path:
    """The step-duration history (run.schedule): $SCICODE_STEP_HISTORY, else in the cache dir."""
    if os.environ.get(ENV_STEP_HISTORY):
        return Path(os.environ[ENV_STEP_HISTORY])
    return cache_dir() / STEP_HISTORY_FILE


def sandbox_image_dir(default: Path) -> Path:
    """The sandbox image recipe: $SCICODE_HARNESS_IMAGE_DIR, else `default` (sandbox_image/)."""
    return Path(os.environ.get(ENV_IMAGE_DIR) or default)


def targets_path(split: str = "dev") -> Path:
    """Where `scicode-harness targets build` keeps regenerated targets by default."""
    return cache_dir() / "targets" / f"{split}.h5"


def prune_siblings(keep: Path) -> list[Path]:
    """Remove the other versions next to a freshly made cache entry (e.g. older
    wheelhouses, one per lock); hidden staging directories are left alone."""
    gone = []
    for p in keep.parent.iterdir():
        if p != keep and p.is_dir() and not p.name.startswith("."):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(dest: Path, mode: Optional[int] = None):
    """A temp file next to `dest`, renamed over it when the block ends without an error
    (readers never see half a file) and removed when it fails. `mode`: mkstemp makes
    0600; None gives what a plain open() would (0666 less the umask)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, mode: Optional[int] = None) -> None:
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
