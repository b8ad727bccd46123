"""Compare a regenerated targets file with an official one, per step and test."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from harness.data.dataset import step_key
from harness.data.h5targets import list_steps
from harness.targets.build import Issue
from harness.targets.compare import values_close
from harness.targets.rewrite import NO_TARGET


@dataclass
class CheckReport:
    ours: str
    official: str
    steps_compared: int = 0
    tests_compared: int = 0
    tests_matching: int = 0
    tests_without_target: int = 0                          # empty in ours: not compared
    mismatches: list = field(default_factory=list)        # Issue
    missing_in_ours: list = field(default_factory=list)   # step ids only in the official file
    extra_in_ours: list = field(default_factory=list)     # step ids only in ours
    count_mismatch: list = field(default_factory=list)    # Issue (different number of tests)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.missing_in_ours or self.count_mismatch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mismatches"] = [asdict(i) for i in self.mismatches]
        d["count_mismatch"] = [asdict(i) for i in self.count_mismatch]
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        lines = [f"check {self.ours} against {self.official}: {self.tests_matching}/{self.tests_compared} "
                 f"tests match over {self.steps_compared} common steps "
                 f"({self.tests_without_target} without target not compared); {len(self.mismatches)} mismatches, "
                 f"{len(self.missing_in_ours)} steps missing, {len(self.extra_in_ours)} extra"]
        lines += [f"  mismatch: {m}" for m in self.mismatches]
        lines += [f"  test count: {m}" for m in self.count_mismatch]
        if self.missing_in_ours:
            lines.append("  missing in ours: " + ", ".join(self.missing_in_ours))
        if self.extra_in_ours:
            lines.append("  only in ours: " + ", ".join(self.extra_in_ours))
        return "\n".join(lines)


def check(ours: Path, official: Path, steps: Optional[Iterable[str]] = None,
          rtol: float = 1e-5, atol: float = 1e-8) -> CheckReport:
    """Compare regenerated targets with an official file, per step and test (np.allclose-style)."""
    from harness.data.h5targets import TargetsError, read_step_targets
    ours, official = Path(ours), Path(official)
    rep = CheckReport(ours=str(ours), official=str(official))
    a, b = list_steps(ours), list_steps(official)
    if steps is not None:
        keep = {str(s) for s in steps}
        a = {k: v for k, v in a.items() if k in keep}
        b = {k: v for k, v in b.items() if k in keep}
    rep.missing_in_ours = sorted(set(b) - set(a), key=step_key)
    rep.extra_in_ours = sorted(set(a) - set(b), key=step_key)
    for sid in sorted(set(a) & set(b), key=step_key):
        rep.steps_compared += 1
        if a[sid] != b[sid]:
            rep.count_mismatch.append(Issue(sid, None, f"{a[sid]} tests in ours, {b[sid]} in the official file"))
        n = min(a[sid], b[sid])
        try:
            va, vb = read_step_targets(ours, sid, n), read_step_targets(official, sid, n)
        except TargetsError as e:
            rep.mismatches.append(Issue(sid, None, f"unreadable: {e}"))
            continue
        for i in range(n):
            if isinstance(va[i], tuple) and va[i] == NO_TARGET:
                rep.tests_without_target += 1   # our empty group: the test uses no target
                continue
            rep.tests_compared += 1
            ok, detail = values_close(va[i], vb[i], rtol=rtol, atol=atol)
            if ok:
                rep.tests_matching += 1
            else:
                rep.mismatches.append(Issue(sid, i + 1, detail))
    return rep
