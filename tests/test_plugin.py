"""The NeMo Evaluator plugin: discovery, the four tasks, rendering, results parsing."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

NE = str(Path(sys.executable).with_name("nemo-evaluator"))


def ne(*args, cwd=None):
    p = subprocess.run([NE, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    return p


def test_ls_lists_the_six_tasks():
    p = ne("ls")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    i = lines.index("scicode: ")
    tasks = [ln.strip("* ").strip() for ln in lines[i + 1:i + 7]]
    assert tasks == ["scicode", "scicode_background", "scicode_verified", "scicode_verified_background",
                     "scicode_aa_v2", "aa_scicode"]


def test_verified_tasks_render_the_benchmark_and_both_envs_by_default(tmp_path):
    for task, background in (("scicode_verified", False), ("scicode.scicode_verified_background", True)):
        cfg, cmd = dry_run(tmp_path, "--eval_type", task)
        assert "--benchmark=verified" in cmd and ("--with-background" in cmd) == background
        assert "--sandbox-envs" not in cmd   # scicode_eval's default for verified: 2024,2025
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode", "--overrides",
                     "config.params.extra.sandbox_envs=2025,config.params.extra.full_envs=true")
    assert "--sandbox-envs=2025" in cmd and "--full-envs" in cmd and "--benchmark" not in cmd


def dry_run(tmp_path, *extra):
    p = ne("run_eval", "--model_id", "my_model", "--model_type", "chat", "--model_url",
           "http://localhost:8000", "--output_dir", "./evaluation_results", "--dry_run", *extra, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    cfg_text, cmd = p.stdout.split("Rendered command:")
    cfg = yaml.safe_load(cfg_text.split("Rendered config:")[1])
    return cfg, " ".join(cmd.split())


def test_seed_dry_run_aa_scicode(tmp_path):
    cfg, cmd = dry_run(tmp_path, "--eval_type", "aa_scicode")
    assert cmd.startswith("p=$PPID; until command -v scicode_eval")   # finds it without `activate`
    assert "; scicode_eval --model my_model --url http://localhost:8000" in cmd
    assert "--n-samples=3" in cmd
    assert "--extra-params top_p=1e-05,timeout=60,max_tokens=4096,max_retries=2" in cmd
    assert "--with-background" in cmd and "--include-dev" in cmd and "--temperature=0.0" in cmd
    p = cfg["config"]["params"]
    assert (p["temperature"], p["max_new_tokens"], p["top_p"], p["request_timeout"], p["max_retries"]) == \
        (0.0, 4096, 1e-05, 60, 2)
    assert p["extra"]["with_background"] and p["extra"]["include_dev"] and p["extra"]["n_samples"] == 3


def test_nvidia_defaults_and_aa_v2(tmp_path):
    cfg, cmd = dry_run(tmp_path, "--eval_type", "scicode")
    p = cfg["config"]["params"]
    assert (p["temperature"], p["max_new_tokens"], p["top_p"], p["request_timeout"], p["max_retries"],
            p["parallelism"]) == (0, 2048, 1e-05, 60, 2, 1)
    ex = p["extra"]
    assert ex["with_background"] is False and ex["include_dev"] is False and ex["n_samples"] == 1
    assert ex["include_system_prompt"] is True and ex["regex_path"] is None and ex["eval_threads"] is None
    for k in ("split", "test_data", "sandbox", "sandbox_runtime", "sandbox_image", "sandbox_timeout",
              "sandbox_memory", "sandbox_cpus"):
        assert k in ex
    assert "--with-background" not in cmd and "--sandbox-runtime" not in cmd  # runc: scicode_eval's default
    cfg, cmd = dry_run(tmp_path, "--eval_type", "scicode.scicode_aa_v2")
    p = cfg["config"]["params"]
    assert p["max_new_tokens"] == 16384 and p["max_retries"] == 30
    assert p["extra"]["regex_path"] == "aa_regex.txt" and p["extra"]["include_system_prompt"] is False
    assert "--regex-path=aa_regex.txt" in cmd and "--prompt-template-type=background_comment_template.txt" in cmd
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode_background")
    assert "--with-background" in cmd


def test_overrides_run_config_and_api_key(tmp_path):
    rc = tmp_path / "rc.yaml"
    rc.write_text(yaml.safe_dump({"config": {"type": "scicode.scicode", "params": {"limit_samples": 2,
                                  "extra": {"sandbox": "process"}}}}))
    cfg, cmd = dry_run(tmp_path, "--run_config", str(rc), "--api_key_name", "MY_KEY", "--overrides",
                       "config.params.extra.n_samples=5,config.params.extra.split=dev,"
                       "config.params.extra.sandbox_runtime=runsc")
    assert "; API_KEY=$MY_KEY SCICODE_API_KEY_NAME=MY_KEY scicode_eval" in cmd
    assert "--limit-samples=2" in cmd and "--n-samples=5" in cmd
    assert "--split=dev" in cmd and "--sandbox=process" in cmd and "--sandbox-runtime=runsc" in cmd
    assert "--max-gen-errors" not in cmd and "--reasoning-end-token" not in cmd   # null: the defaults
    _, cmd = dry_run(tmp_path, "--eval_type", "aa_scicode", "--overrides",
                     "config.params.extra.max_gen_errors=5,config.params.extra.reasoning_end_token=</think>")
    assert "--max-gen-errors=5" in cmd and "--reasoning-end-token='</think>'" in cmd   # quoted for bash


def test_parse_output(tmp_path):
    from core_evals.scicode.output import parse_output
    d = tmp_path / "scicode_results"
    d.mkdir()
    (d / "m_with_background.json").write_text(json.dumps({
        "steps_pass@1": 0.5, "problems_pass@1": 0.25, "n_samples": 3,
        "stderr": {"steps_pass@1": 0.1, "problems_pass@1": 0.05}}))
    res = parse_output(str(tmp_path))
    for part in (res.tasks, res.groups):
        m = part["scicode"].metrics
        s = m["steps_pass@1"].scores["steps_pass@1"]
        assert s.value == 0.5 and s.stats.count == 3 and s.stats.stderr == 0.1
        assert m["problems_pass@1"].scores["problems_pass@1"].value == 0.25


def test_issue_21_extras_render(tmp_path):
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode")
    assert "--problem-ids" not in cmd and "--max-context-tokens" not in cmd and "--price-" not in cmd
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode", "--overrides",
                     "config.params.extra.problem_ids='66,67,68',config.params.extra.max_context_tokens=65536,"
                     "config.params.extra.price_in=0.5,config.params.extra.price_out=2")
    assert "--problem-ids='66,67,68'" in cmd and "--max-context-tokens=65536" in cmd
    assert "--price-in=0.5" in cmd and "--price-out=2" in cmd
    rc = tmp_path / "rc.yaml"
    rc.write_text(yaml.safe_dump({"config": {"type": "scicode", "params": {"extra": {"problem_ids": [12, 13, 80]}}}}))
    _, cmd = dry_run(tmp_path, "--run_config", str(rc))
    assert "--problem-ids='12,13,80'" in cmd


def test_issue_22_extras_render(tmp_path):
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode")
    assert "--baseline" not in cmd and "--pass-k" not in cmd
    _, cmd = dry_run(tmp_path, "--eval_type", "scicode", "--overrides",
                     "config.params.extra.baseline=/runs/last,config.params.extra.pass_k='1,3',"
                     "config.params.extra.n_samples=3")
    assert "--baseline=/runs/last" in cmd and "--pass-k='1,3'" in cmd
    rc = tmp_path / "rc.yaml"
    rc.write_text(yaml.safe_dump({"config": {"type": "scicode", "params": {"extra": {"pass_k": [1, 5]}}}}))
    _, cmd = dry_run(tmp_path, "--run_config", str(rc))
    assert "--pass-k='1,5'" in cmd
