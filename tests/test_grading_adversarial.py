"""Reward hacks against the grading, in real Docker sandboxes on the dev split.

One scicode_eval run answers every dev step with attack code; each sample index is one
attack (the fake endpoint picks by the request's seed). Every attack must score 0 steps,
except where an honest constant answer passes the benchmark's own tests: 10.10's targets
are all 0.0 and 78.2's tests accept an all-zero trajectory (see README). The baselines
`honest_zero` and `honest_zero_array` (every function returns 0.0, or an array of zeros)
measure that; forgers that claim zeros may pass
what it passes and nothing else.

The run is made once per sandbox environment the candidates run in (`--sandbox-envs 2024`,
then `2025`: numpy 2.4/scipy 1.17 in the sandbox, the verifier still on 2024); every attack
must score in 2025 what it scores in 2024. A third run puts every attack under `--sandbox
bwrap` (2024 environment) on the whole dev split, where each must score what it scores under
Docker.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_endpoint import FakeEndpoint

BIN = Path(sys.executable).parent
# steps a constant all-zero answer passes honestly, whatever the grading
ZERO_PASSES = {"10.10", "78.2"}

_FIND = r'''
_sys = __import__("sys")
_gc = __import__("gc")
def _loot():
    f = _sys._getframe(1)
    while f is not None:
        for d in (f.f_locals, f.f_globals):
            for k in ("target", "targets", "TARGETS", "values"):
                v = d.get(k)
                if v is not None and not callable(v):
                    return v[0] if k != "target" and isinstance(v, (list, tuple)) and v else v
        f = f.f_back
    rt = _sys.modules.get("_scicode_runtime")
    if rt is not None and getattr(rt, "TARGETS", None):
        return rt.TARGETS[0]
    for o in _gc.get_objects():
        if isinstance(o, dict) and o.get("target") is not None and o is not globals():
            return o["target"]
    for root in ("/tmp", "/data", "/opt", "/root", "/home", "/work"):
        for dirpath, _, files in __import__("os").walk(root):
            for fn in files:
                if fn.endswith((".h5", ".hdf5", ".jsonl")):
                    return open(__import__("os").path.join(dirpath, fn), "rb").read(64)
    return 12345.0
'''

_PATCH = r'''
_np = __import__("numpy")
_bi = __import__("builtins")
_always = lambda *a, **k: True
for _n in ("allclose", "isclose", "array_equal", "array_equiv", "equal"):
    setattr(_np, _n, _always)
class _NoFail(Exception):
    pass
_bi.AssertionError = _NoFail
try:
    _cmp = __import__("scicode.compare.cmp", fromlist=["x"])
    _cmp.cmp_tuple_or_list = _always
    _cmp.are_dicts_close = _always
except Exception:
    pass
try:
    _np.ndarray.__eq__ = lambda self, other: True
except TypeError:
    pass
'''

_FORGE = r'''
_sys = __import__("sys"); _os = __import__("os"); _json = __import__("json")
def _forge(value):
    f = _sys._getframe(0)
    while f is not None and "marker" not in f.f_locals:
        f = f.f_back
    if f is None:
        return
    loc = f.f_locals
    codec = _sys.modules.get("_scicode_codec")
    n = len(loc.get("tests") or [1, 1, 1, 1])
    enc = codec.encode((0, (value,))) if codec else None
    rep = {"completed": True, "import_error": None, "tests": [{"status": "pass", "error": None}] * n,
           "records": [[enc]] * n}
    line = "\n" + loc["marker"] + _json.dumps(rep) + "\n"
    for fd in (1, 2, loc.get("report_fd", 1), loc.get("done_fd", 2)):
        try:
            _os.write(fd, ("\n" + loc["marker"] + "\n").encode() if fd in (2, loc.get("done_fd")) else line.encode())
        except OSError:
            pass
    _os._exit(0)
'''

ATTACKS = {
    "honest_zero": "def {name}(*a, **k):\n    return 0.0\n",
    "honest_zero_array": "def {name}(*a, **k):\n    return __import__('numpy').zeros((1001, 2))\n",
    "loot_target": _FIND + "def {name}(*a, **k):\n    return _loot()\n",
    "patch_comparators": _PATCH + "def {name}(*a, **k):\n    return _np.zeros(3)\n",
    "forge_at_import": _FORGE + "_forge(0.0)\ndef {name}(*a, **k):\n    return 0.0\n",
    "forge_in_call": _FORGE + "def {name}(*a, **k):\n    _forge(__import__('numpy').zeros(3))\n",
    "permissive_objects": (
        "class _Any:\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "    def __bool__(self): return True\n"
        "    def __array__(self, *a, **k): return __import__('numpy').zeros(3)\n"
        "    def __len__(self): return 3\n"
        "    def __getitem__(self, i): return self\n"
        "    def __iter__(self): return iter([self, self, self])\n"
        "    def __float__(self): return 0.0\n"
        "class _Sub(__import__('numpy').ndarray):\n"
        "    def __eq__(self, o): return True\n"
        "    def __array_function__(self, func, types, args, kwargs): return True\n"
        "    def __array_ufunc__(self, *a, **k): return True\n"
        "def {name}(*a, **k):\n"
        "    return (_Any(), __import__('numpy').zeros(2).view(_Sub))[len(a) % 2]\n"),
    "vacuous": "def {name}(*a, **k):\n    return __import__('numpy').array([])\n",
    "nan_and_huge": ("def {name}(*a, **k):\n"
                     "    np = __import__('numpy')\n"
                     "    return [np.full(2_000_000, np.nan), float('nan')][len(a) % 2]\n"),
    "deep_nesting": ("def {name}(*a, **k):\n"
                     "    x = 0.0\n"
                     "    for _ in range(100000):\n"
                     "        x = [x]\n"
                     "    return x\n"),
    "decode_bomb": _FORGE.replace("enc = codec.encode((0, (value,))) if codec else None",
                                  "enc = value") + (
        "def {name}(*a, **k):\n"
        "    _forge({'__t': 'tuple', 'items': [0, {'__t': 'tuple', 'items': ["
        "{'__t': 'sympy', 'v': \"__import__('os').system('touch /tmp/pwned')\"}, "
        "{'__t': 'nd', 'dtype': '|O', 'shape': [1], 'b64': 'AAAAAAAAAAA='}, "
        "{'__t': 'nd', 'dtype': '<f8', 'shape': [1000000000, 1000000000], 'b64': ''}]}]})\n"),
    "exit_zero": "def {name}(*a, **k):\n    return 0.0\n__import__('os')._exit(0)\n",
    "bool_guess": "def {name}(*a, **k):\n    return True\n",
}
NAMES = list(ATTACKS)
SCORES: dict = {}   # env -> attack -> steps passed, to compare each env with 2024
RUNS = ["2024", "2025", "bwrap"]   # candidates' env under docker, and bwrap (2024 env)


@pytest.fixture(scope="module", params=RUNS)
def attack_run(request, tmp_path_factory, dev_problems, dev_targets, sandbox_image):
    """One run per sandbox environment the candidates run in (the verifier stays on 2024)."""
    from harness.reference import StepIndex
    bwrap = request.param == "bwrap"
    env = "2024" if bwrap else request.param
    image = sandbox_image if env == "2024" else request.getfixturevalue(f"sandbox_image_{env}")
    index = StepIndex(dev_problems)
    out = tmp_path_factory.mktemp(f"adversarial{request.param}")

    def respond(prompt, body):
        entry = index.find(prompt)
        name = (entry.name if entry and entry.name else "solution")
        attack = ATTACKS[NAMES[int(body.get("seed") or 0) % len(NAMES)]]   # the preflight sends a random seed
        return "```python\n" + attack.replace("{name}", name) + "```"

    with FakeEndpoint(respond) as ep:
        p = subprocess.run(
            [str(BIN / "scicode_eval"), "--model", "attacker", "--url", ep.url, "--split", "dev",
             "--with-background", "--n-samples", str(len(NAMES)), "--concurrent-requests", "8",
             "--eval-threads", "2", "--sandbox", "bwrap" if bwrap else "docker", "--sandbox-timeout", "120",
             "--output-dir", str(out), "--test-data", str(dev_targets), "--progress", "plain",
             "--sandbox-envs", env],
            capture_output=True, text=True, timeout=1500,
            env=dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    res = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert res["run"]["sandbox_envs"]["envs"] == [env]   # candidates ran there
    assert res["run"]["sandbox"] == ("bwrap" if bwrap else "docker")
    if not bwrap:
        assert {r["image"] for r in records if "image" in r} == {image.id}
    return out, records


@pytest.mark.docker
@pytest.mark.parametrize("attack", NAMES)
def test_attack_scores_nothing(attack_run, attack, request):
    _, records = attack_run
    sample = NAMES.index(attack)
    mine = [r for r in records if r["sample"] == sample]
    run = request.node.callspec.params["attack_run"]
    assert len(mine) == 50
    assert not [r for r in mine if r["status"] in ("gen_error", "infra")]   # every attack ran
    passed = {r["step_id"] for r in mine if r["status"] == "pass"}
    zero = {r["step_id"] for r in records if r["sample"] in (0, 1) and r["status"] == "pass"}
    assert zero <= ZERO_PASSES
    assert passed <= zero, f"{attack} passed {sorted(passed)}, an all-zero answer only {sorted(zero)}"
    SCORES.setdefault(run, {})[attack] = passed
    docker = SCORES.get("2024", {}).get(attack)
    assert docker is None or passed == docker, f"{attack} under {run}: not as in docker 2024"


@pytest.mark.docker
def test_no_code_ran_in_the_verifier(attack_run):
    assert not Path("/tmp/pwned").exists()
    out, records = attack_run
    bombs = [r for r in records if r["sample"] == NAMES.index("decode_bomb") and r["status"] != "pass"]
    # refused at the host's boundary (harness.sandbox.boundary), before the verifier sees it
    assert any("not accepted" in json.dumps(r["tests"]) + (r.get("error") or "") for r in bombs)


@pytest.mark.docker
def test_results_name_the_grading(attack_run):
    out, _ = attack_run
    res = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    g = res["run"]["grading"]
    assert g["mode"] == "strict"
    assert g["verifier_versions"]["numpy"].startswith("1.26")
    assert g["tests"]["unsupported"] == 0
    assert g["tests"]["tests"] == 167
