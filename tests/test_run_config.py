"""The typed run config: built once by the command line from flags and the environment."""
import dataclasses
from pathlib import Path

import pytest

from harness.cli.evaluate import parser, run_config
from harness.run.generate import GenConfig

BASE = ["--model", "org/m", "--url", "http://x/v1/chat/completions"]


def config(*flags, env=None):
    return run_config(parser().parse_args([*BASE, *flags]), {} if env is None else env)


def test_defaults_match_the_flags_defaults():
    c = config()
    assert (c.model, c.split, c.n_samples, c.limit_samples, c.problems) == ("org/m", "test", 1, None, None)
    assert c.generation.api_key is None and c.generation.api_key_name is None
    assert c.generation.backoff_base == 1.0 and c.generation.extra_params == ""
    assert (c.sandbox.kind, c.sandbox.runtime, c.sandbox.workers, c.sandbox.process_python) == \
        ("auto", "runc", None, None)
    assert (c.grading.mode, c.grading.test_data, c.grading.allow_missing_targets) == ("strict", None, False)
    assert (c.output.dir, c.output.log_dir, dict(c.output.fail_under), c.output.max_gen_errors) == \
        (Path("eval_results"), None, {}, 0)
    assert (c.prompting.prefill, c.prompting.reasoning_end_token) == ("verbatim", "</think>")


def test_every_flag_lands_in_the_config():
    c = config("--output-dir", "o", "--log-dir", "l", "--with-background", "--temperature", "0.5",
               "--limit-samples", "2", "--n-samples", "3", "--extra-params", "top_p=0.9",
               "--eval-threads", "4", "--concurrent-requests", "5", "--regex-path", "r.txt",
               "--prompt-template-type", "t.txt", "--test-data", "td.h5", "--sandbox", "docker",
               "--sandbox-runtime", "runsc", "--sandbox-image", "img", "--sandbox-timeout", "9",
               "--sandbox-memory", "1g", "--sandbox-cpus", "2", "--junit-xml", "j.xml",
               "--fail-under", "steps=0.3,problems=0.1", "--prefill", "extract", "--problems", "p.jsonl",
               "--grading", "inprocess", "--max-gen-errors", "6", "--reasoning-end-token", "",
               "--allow-missing-targets", "--quiet", "--progress", "plain")
    g, p, s, gr, o = c.generation, c.prompting, c.sandbox, c.grading, c.output
    assert (g.temperature, g.extra_params, g.concurrency) == (0.5, "top_p=0.9", 5)
    assert (c.limit_samples, c.n_samples, c.problems, c.with_background) == (2, 3, Path("p.jsonl"), True)
    assert (p.template_type, p.regex_path, p.prefill, p.reasoning_end_token) == ("t.txt", "r.txt", "extract", "")
    assert (s.kind, s.runtime, s.image, s.timeout, s.memory, s.cpus, s.workers) == \
        ("docker", "runsc", "img", 9.0, "1g", 2.0, 4)
    assert (gr.mode, gr.test_data, gr.allow_missing_targets) == ("inprocess", Path("td.h5"), True)
    assert (o.dir, o.log_dir, o.junit_xml, o.quiet, o.progress, o.max_gen_errors) == \
        (Path("o"), Path("l"), Path("j.xml"), True, "plain", 6)
    assert dict(o.fail_under) == {"steps": 0.3, "problems": 0.1}


@pytest.mark.parametrize("flags, split", [((), "test"), (("--include-dev",), "all"),
                                          (("--split", "dev"), "dev"),
                                          (("--include-dev", "--split", "test"), "test")])
def test_an_explicit_split_wins_over_include_dev(flags, split):
    assert config(*flags).split == split


def test_the_environment_is_read_here():
    env = {"API_KEY": "k", "SCICODE_API_KEY_NAME": "MY_KEY", "SCICODE_GEN_BACKOFF_BASE": "0.25",
           "SCICODE_PROCESS_PYTHON": "/opt/py/bin/python"}
    c = config(env=env)
    assert (c.generation.api_key, c.generation.api_key_name, c.generation.backoff_base) == ("k", "MY_KEY", 0.25)
    assert c.sandbox.process_python == "/opt/py/bin/python"
    empty = config(env={"API_KEY": "", "SCICODE_API_KEY_NAME": "", "SCICODE_PROCESS_PYTHON": ""})
    assert (empty.generation.api_key, empty.generation.api_key_name, empty.sandbox.process_python) == \
        (None, None, None)


def test_the_process_environment_is_the_default(monkeypatch):
    monkeypatch.setenv("API_KEY", "from-env")
    assert run_config(parser().parse_args(BASE)).generation.api_key == "from-env"


def test_below_the_command_line_nothing_reads_api_key(monkeypatch):
    monkeypatch.setenv("API_KEY", "from-env")
    assert GenConfig(url="u", model="m").api_key is None


def test_the_config_is_frozen():
    c = config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_samples = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sandbox.kind = "process"
    with pytest.raises(TypeError):
        c.output.fail_under["steps"] = 1.0


def test_a_bad_backoff_is_one_line_not_a_traceback():
    from harness.errors import UserError
    assert config(env={"SCICODE_GEN_BACKOFF_BASE": "0.05"}).generation.backoff_base == 0.05
    with pytest.raises(UserError, match="SCICODE_GEN_BACKOFF_BASE='fast' is not a number"):
        config(env={"SCICODE_GEN_BACKOFF_BASE": "fast"})


def test_sandbox_envs_default_per_benchmark_and_process_interpreters():
    from harness.errors import UserError
    assert (config().sandbox.envs, config().sandbox.full_envs, config().benchmark) == (("2024",), False, "scicode")
    v = config("--benchmark", "verified", env={"SCICODE_VERIFIED_PIN": "pin.json"})
    assert v.benchmark == "verified" and v.sandbox.envs == ("2024", "2025") and v.verified_pin == Path("pin.json")
    c = config("--sandbox-envs", "2025,2024", "--full-envs",
               env={"SCICODE_PROCESS_PYTHON_2025": "/v25/bin/python", "SCICODE_PROCESS_PYTHON_2030": "x"})
    assert c.sandbox.envs == ("2025", "2024") and c.sandbox.full_envs
    assert dict(c.sandbox.env_pythons) == {"2025": "/v25/bin/python"}
    assert config("--benchmark", "verified", "--sandbox-envs", "2024").sandbox.envs == ("2024",)
    for bad in (["--sandbox-envs", "2023"], ["--sandbox-envs", "2024,2024"],
                ["--benchmark", "verified", "--split", "dev"], ["--benchmark", "verified", "--include-dev"]):
        with pytest.raises(UserError) as e:
            config(*bad)
        assert "\n" not in str(e.value)


def test_issue_21_flags_land_in_the_config():
    c = config("--problem-ids", "80, 12,12,13", "--max-context-tokens", "65536", "--price-in", "0.5",
               "--price-out", "2")
    assert c.problem_ids == ("80", "12", "13") and c.generation.max_context_tokens == 65536
    assert (c.output.price_in, c.output.price_out) == (0.5, 2.0)
    d = config()
    assert (d.problem_ids, d.generation.max_context_tokens, d.output.price_in, d.output.price_out) == \
        ((), None, None, None)
    for bad in (["--problem-ids", ""], ["--problem-ids", "1,"], ["--price-in", "-1"], ["--max-context-tokens", "0"]):
        with pytest.raises(SystemExit):
            config(*bad)
