"""configs/: every run configuration goes through the real nemo-evaluator (`run_eval --dry_run`,
the command it would start), and scicode_eval must accept that command with the settings the
file promises. The launcher file is run for real in tests/test_container.py."""
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BIN = Path(sys.executable).parent
RUN_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml") if "config" in yaml.safe_load(p.read_text()))


def rendered(name: str, tmp_path: Path) -> list[str]:
    """scicode_eval's argv as nemo-evaluator renders it for configs/NAME."""
    p = subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--run_config", str(CONFIGS / name),
                        "--output_dir", str(tmp_path / "out"), "--dry_run"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    command = p.stdout.split("Rendered command:", 1)[1].strip()
    words = shlex.split(command.split("; ")[-1])
    return words[words.index("scicode_eval") + 1:]


def settings(name: str, tmp_path: Path):
    from harness.cli.evaluate import parser, run_config
    args = parser().parse_args(rendered(name, tmp_path))
    return run_config(args, env={"API_KEY": "k", "SCICODE_API_KEY_NAME": "MY_API_KEY"})


def test_every_file_is_listed_in_the_readme():
    text = (CONFIGS / "README.md").read_text()
    assert RUN_CONFIGS and "launcher_local.yaml" in text
    for name in RUN_CONFIGS:
        assert f"`{name}`" in text, name


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_renders_a_command_scicode_eval_accepts(name, tmp_path):
    c = settings(name, tmp_path)
    assert c.generation.model and c.generation.url.endswith("/chat/completions")
    assert c.output.dir == tmp_path / "out"


def test_verified_is_the_authors_protocol(tmp_path):
    c = settings("verified.yaml", tmp_path)
    assert (c.benchmark, c.split, c.sandbox.envs, c.n_samples) == ("verified", "test", ("2024", "2025"), 1)
    assert not c.prompting.with_background


def test_scicode_is_comparable_with_published_numbers(tmp_path):
    c = settings("scicode.yaml", tmp_path)
    assert (c.benchmark, c.split, c.sandbox.envs, c.grading.mode) == ("scicode", "test", ("2024",), "strict")


def test_aa_scicode_is_nvidias_example(tmp_path):
    c = settings("aa_scicode.yaml", tmp_path)
    assert (c.split, c.limit_samples, c.generation.concurrency) == ("all", 20, 50)
    assert c.prompting.with_background


def test_ci_gate_compares_three_samples_with_a_baseline(tmp_path):
    c = settings("ci_gate.yaml", tmp_path)
    assert (c.n_samples, c.output.pass_k, str(c.output.baseline)) == (3, (1, 3), "results/baseline")
    assert c.generation.temperature == 0.7 and "top_p=0.95" in c.generation.extra_params
    assert c.output.junit_xml and c.output.max_gen_errors == 5


def test_reasoning_fits_a_small_window(tmp_path):
    c = settings("reasoning.yaml", tmp_path)
    assert (c.generation.max_context_tokens, c.prompting.reasoning_end_token) == (32768, "</think>")
    assert "max_tokens=16384" in c.generation.extra_params and "timeout=900" in c.generation.extra_params
    assert c.output.max_gen_errors == 10


def test_no_docker_runs_under_bwrap(tmp_path):
    c = settings("no_docker.yaml", tmp_path)
    assert (c.sandbox.kind, c.sandbox.workers, c.benchmark) == ("bwrap", 8, "verified")
