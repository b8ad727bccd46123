"""Where the harness keeps its cache (dataset, wheelhouse, targets)."""
import os
from pathlib import Path

ENV_CACHE = "SCICODE_HARNESS_CACHE"


def cache_dir() -> Path:
    """$SCICODE_HARNESS_CACHE, else $XDG_CACHE_HOME/scicode-harness, else ~/.cache/scicode-harness."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scicode-harness"


def targets_path(split: str = "dev") -> Path:
    """Where `scicode-harness targets build` keeps regenerated targets by default."""
    return cache_dir() / "targets" / f"{split}.h5"
