"""SciCode-Verified end to end, no network: a release in its format is made here from the dev
split (problem 70 renamed 13, so its step 13.6 is the never-asked one and carries its reference
code in the JSONL, as the released file does; its 13.5 without tests, like the release's 72.6;
problems 1 and 3 as they are), served by a local HTTP server, pulled with `scicode-harness data pull --benchmark verified` under a pin file, and
run with `nemo-evaluator run_eval --eval_type scicode_verified` against the gold endpoint."""
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import pytest
import yaml

from harness.data import dataset

BIN = Path(sys.executable).parent
IDS = {"70": "13", "1": "1", "3": "3"}   # dev problem -> its id in the fixture release


def _renamed(problem: dict) -> dict:
    new = IDS[problem["problem_id"]]
    p = dict(problem, problem_id=new)
    p["sub_steps"] = [dict(s, step_number=f"{new}.{s['step_number'].split('.', 1)[1]}")
                      for s in problem["sub_steps"]]
    return p


def _release(tmp: Path, dev_problems, dev_targets) -> tuple[Path, Path]:
    """(directory holding the three files, JSONL with every step's gold code for the endpoint)."""
    gold = [_renamed(p) for p in dev_problems if p["problem_id"] in IDS]
    shipped = []
    for p in gold:   # as released: no reference code, except for the never-asked step
        steps = [dict(s, ground_truth_code=s["ground_truth_code"] if s["step_number"] in
                      dataset.SKIPPED_STEPS else None) for s in p["sub_steps"]]
        # 13.6 has no tests; nor has 13.5, like the release's 72.6 (scored: the program must run)
        steps = [dict(s, test_cases=[]) if s["step_number"] in ("13.5", "13.6") else s for s in steps]
        shipped.append(dict(p, sub_steps=steps))
    rel = tmp / "release"
    (rel / "scicode_verified").mkdir(parents=True)
    jsonl = "".join(json.dumps(p) + "\n" for p in shipped).encode()
    (rel / "scicode_verified" / "problems_test.jsonl").write_bytes(jsonl)
    h5 = rel / "test_data_cleaned.h5"
    with h5py.File(dev_targets, "r") as src, h5py.File(h5, "w") as dst:
        for old, new in IDS.items():
            for name in src:
                if name.split(".")[0] == old and name != "70.6":
                    src.copy(src[name], dst, name=f"{new}.{name.split('.', 1)[1]}")
    manifest = {"version": "v2", "n_problems": len(shipped), "problem_order": [p["problem_id"] for p in shipped],
                "problems_test_jsonl_md5": hashlib.md5(jsonl).hexdigest(), "targets_md5": {},
                "h5_md5": hashlib.md5(h5.read_bytes()).hexdigest()}
    (rel / "scicode_verified" / "manifest.json").write_text(json.dumps(manifest))
    gold_file = tmp / "gold.jsonl"
    gold_file.write_text("".join(json.dumps(p) + "\n" for p in gold))
    return rel, gold_file


@pytest.fixture()
def served(tmp_path, dev_problems, dev_targets):
    rel, gold = _release(tmp_path, dev_problems, dev_targets)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(rel), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    man = json.loads((rel / "scicode_verified" / "manifest.json").read_text())
    pin = tmp_path / "pin.json"
    pin.write_text(json.dumps({
        "commit": "fixture", "source": "test fixture made from the dev split",
        "urls": {"problems": f"{base}/scicode_verified/problems_test.jsonl",
                 "manifest": f"{base}/scicode_verified/manifest.json", "h5": f"{base}/test_data_cleaned.h5"},
        "md5": {"problems": man["problems_test_jsonl_md5"], "h5": man["h5_md5"]},
        "n_problems": man["n_problems"], "unscored_steps": ["13.6"]}))
    # a cache of its own, sharing the user's verified original dataset (templates)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(dataset.cache_path().parent, target_is_directory=True)
    env = dict(os.environ, SCICODE_VERIFIED_PIN=str(pin), SCICODE_HARNESS_CACHE=str(cache),
               PATH=f"{BIN}:{os.environ['PATH']}")
    yield env, gold
    srv.shutdown()
    srv.server_close()


@pytest.mark.docker
def test_verified_task_end_to_end_through_nemo_evaluator(served, tmp_path, sandbox_image, sandbox_image_2025):
    from harness.reference import make_server
    env, gold = served
    p = subprocess.run([str(BIN / "scicode-harness"), "data", "pull", "--benchmark", "verified"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "strict grading: 9 scored steps" in p.stdout and "all split" in p.stdout
    ref = make_server("127.0.0.1", 0, problems_path=gold)
    threading.Thread(target=ref.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    try:
        p = subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--eval_type", "scicode_verified",
                            "--model_id", "scicode-reference", "--model_type", "chat",
                            "--model_url", f"http://127.0.0.1:{ref.server_address[1]}/v1/chat/completions",
                            "--output_dir", str(out), "--overrides",
                            "config.params.extra.eval_threads=2,config.params.parallelism=4"],
                           capture_output=True, text=True, env=env, timeout=900)
    finally:
        ref.shutdown()
        ref.server_close()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = yaml.safe_load((out / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
    assert res["steps_pass@1"]["scores"]["steps_pass@1"]["value"] == 1.0
    assert res["problems_pass@1"]["scores"]["problems_pass@1"]["value"] == 1.0
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    run = data["run"]
    assert run["benchmark"] == "verified" and run["data"]["official"] is False
    assert run["sandbox_envs"]["envs"] == ["2024", "2025"]          # the protocol's default
    assert run["sandbox_envs"]["counts"]["2025"] == {}               # gold passes in the first era
    assert run["grading"]["tests"]["unsupported"] == 0               # every test case split
    records = [json.loads(ln) for ln in (out / "records.jsonl").read_text().splitlines()]
    steps = sorted(r["step_id"] for r in records)
    assert "13.6" not in steps and "13.5" in steps and len(steps) == data["scored_steps"] == 7 + 1 + 1
    assert all(r["status"] == "pass" and r["env"] == "2024" and list(r["envs"]) == ["2024"] for r in records)
    # 13.7 and 13.8 ran on top of 13.6's reference code from the verified JSONL
    prog = (out / "generated_code").rglob("13.7_0.py")
    assert next(prog, None) is not None
