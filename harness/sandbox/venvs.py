"""Where the built environments (venvs) live: one per sandbox environment and lock digest.

``scicode-harness env build`` (harness.build.sandbox_env) installs each environment's hashed lock,
offline from its wheelhouse, into ``<cache>/envs/<env>/<lock digest>`` and writes
``.complete`` last. A root harness whose cache uid 65534 cannot reach (``/root/.cache``) keeps
them in ``/var/cache/scicode-harness/envs`` instead: its sandboxes run as 65534. The bwrap backend binds that directory read-only into its sandboxes; the
process backend runs its interpreter. Neither ever runs model code in the harness's own.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from harness.sandbox.envs import DEFAULT_ENV
from harness.sandbox.image_lookup import lock_digest
from harness.util.paths import cache_dir

STAMP = ".complete"
SYSTEM_ENVS = Path("/var/cache/scicode-harness/envs")


def others_can_reach(path: Path) -> bool:
    """Every existing directory on the way to `path` lets other users through."""
    for p in [path, *path.parents]:
        try:
            if p.is_dir() and not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def envs_root() -> Path:
    own = cache_dir() / "envs"
    return SYSTEM_ENVS if os.geteuid() == 0 and not others_can_reach(own) else own


def env_dir(env: str = DEFAULT_ENV) -> Path:
    """<envs root>/<env>/<lock digest>: the environment's venv for its current lock."""
    return envs_root() / env / lock_digest(env=env)


def find_env(env: str = DEFAULT_ENV) -> Optional[Path]:
    """The built venv of `env` for its current lock (in either root), or None."""
    digest = lock_digest(env=env)
    for root in dict.fromkeys([envs_root(), cache_dir() / "envs", SYSTEM_ENVS]):
        d = root / env / digest
        if (d / STAMP).is_file() and (d / "bin" / "python").exists():
            return d
    return None


def build_hint(env: str) -> str:
    return f"run `scicode-harness env build --env {env}`"
