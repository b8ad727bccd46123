"""Where the harness keeps its cache (dataset, wheelhouse, targets)."""
import hashlib
import os
import shutil
from pathlib import Path

ENV_CACHE = "SCICODE_HARNESS_CACHE"


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
