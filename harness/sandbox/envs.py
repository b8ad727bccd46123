"""The sandbox environments: library eras a candidate can run in, each one hashed lock.

`2024` (numpy 1.26, scipy 1.13) is the environment SciCode was written against and the one
published numbers use; `2025` (numpy 2.4, scipy 1.17) is SciCode-Verified's second era. Code that
is correct in only one era (scipy 1.13's `sqrtm` returns complex256 that numpy 1.26's linalg
rejects; `scipy.integrate.simps` is gone from scipy 1.14) passes in the other. Each lock is
materialized as an image (harness.build.image) tagged ``scicode-sandbox:<env>``.
"""
from __future__ import annotations

from typing import Literal, get_args

from harness.errors import HarnessError

SandboxEnv = Literal["2024", "2025"]
ENVS: tuple[SandboxEnv, ...] = get_args(SandboxEnv)
DEFAULT_ENV: SandboxEnv = "2024"
VERIFIER_ENV: SandboxEnv = "2024"   # strict grading's verifier stays pinned, whatever the candidates run in

# Modules every image must import, and what must (not) be there in each era.
SMOKE_SOURCE = {
    "2024": ("import numpy, scipy, sympy, mpmath, h5py, matplotlib\n"
             "from scipy.integrate import simps\n"
             "from mpl_toolkits.mplot3d import Axes3D\n"
             "print('ok')\n"),
    "2025": ("import numpy, scipy, sympy, mpmath, h5py, matplotlib\n"
             "import scipy.integrate\n"
             "assert not hasattr(scipy.integrate, 'simps') and numpy.__version__.startswith('2.')\n"
             "from mpl_toolkits.mplot3d import Axes3D\n"
             "print('ok')\n"),
}


class EnvError(HarnessError, ValueError):
    """A malformed --sandbox-envs value; one line."""


def parse_envs(text: str | tuple | list) -> tuple[SandboxEnv, ...]:
    """'2024', '2025' or '2024,2025' (tried in that order) -> a tuple of distinct known envs."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if not parts:
        raise EnvError(f"--sandbox-envs is empty: expected one or more of {', '.join(ENVS)}")
    bad = [p for p in parts if p not in ENVS]
    if bad:
        raise EnvError(f"unknown sandbox environment {', '.join(map(repr, bad))}: expected "
                       f"{' or '.join(ENVS)}, or both comma-separated (e.g. 2024,2025)")
    if len(set(parts)) != len(parts):
        raise EnvError(f"--sandbox-envs names an environment twice: {','.join(parts)}")
    return tuple(parts)  # type: ignore[return-value]
