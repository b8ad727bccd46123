"""The run's settings, typed and frozen: built once by the command line (harness.cli.evaluate)
from its flags and the environment; nothing below it reads argparse or os.environ."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping, Optional

from harness.sandbox.envs import DEFAULT_ENV, SandboxEnv
from harness.sandbox.registry import SandboxKind
from harness.sandbox.runtime import Runtime

Split = Literal["test", "dev", "all"]
Benchmark = Literal["scicode", "verified"]   # verified: SciCode-Verified's corrected test split
GradingMode = Literal["strict", "inprocess"]   # inprocess: unsafe, model code shares the verdict's process
Prefill = Literal["verbatim", "extract"]
ProgressStyle = Literal["auto", "rich", "plain"]


@dataclass(frozen=True)
class Generation:
    url: str
    model: str
    temperature: float = 0.0
    extra_params: str = ""          # --extra-params, parsed by GenConfig.from_params
    concurrency: int = 1
    api_key: Optional[str] = None   # $API_KEY; empty counts as unset
    api_key_name: Optional[str] = None   # $SCICODE_API_KEY_NAME: the variable the framework meant
    backoff_base: float = 1.0       # $SCICODE_GEN_BACKOFF_BASE
    max_context_tokens: Optional[int] = None   # prompts estimated over it are not sent (context_overflow)


@dataclass(frozen=True)
class Prompting:
    with_background: bool = False
    template_type: Optional[str] = None
    regex_path: Optional[str] = None
    prefill: Prefill = "verbatim"
    reasoning_end_token: str = "</think>"


@dataclass(frozen=True)
class Sandbox:
    kind: SandboxKind = "auto"
    runtime: Optional[Runtime] = "runc"
    image: Optional[str] = None
    timeout: float = 1800.0
    memory: str = "4g"
    cpus: float = 1.0
    workers: Optional[int] = None          # None: the CPU count
    process_python: Optional[str] = None   # $SCICODE_PROCESS_PYTHON (process backend only)
    # library eras a candidate runs in, in order: the step passes if it passes in one of them
    envs: tuple[SandboxEnv, ...] = (DEFAULT_ENV,)
    full_envs: bool = False                # run every env even after a pass (a breakdown)
    # process backend: an interpreter per non-default env ($SCICODE_PROCESS_PYTHON_<ENV>)
    env_pythons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Grading:
    mode: GradingMode = "strict"
    test_data: Optional[Path] = None   # --test-data; None: $SCICODE_TEST_DATA, then the cache
    allow_missing_targets: bool = False


@dataclass(frozen=True)
class Output:
    dir: Path = Path("eval_results")
    log_dir: Optional[Path] = None     # None: dir/logs
    quiet: bool = False
    progress: ProgressStyle = "auto"
    junit_xml: Optional[Path] = None
    fail_under: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    max_gen_errors: int = 0
    price_in: Optional[float] = None    # per million prompt tokens: adds a cost to the results
    price_out: Optional[float] = None   # per million completion tokens
    pass_k: tuple[int, ...] = ()        # --pass-k; empty: 1 and n
    baseline: Optional[Path] = None     # --baseline: compare with this run at the end
    alpha: float = 0.05                 # --baseline-alpha


@dataclass(frozen=True)
class RunConfig:
    generation: Generation
    split: Split = "test"              # resolved: an explicit --split wins over --include-dev
    benchmark: Benchmark = "scicode"
    verified_pin: Optional[Path] = None   # $SCICODE_VERIFIED_PIN: a mirror's (or a test's) pin file
    problems: Optional[Path] = None    # own problems JSONL instead of the split
    problem_ids: tuple[str, ...] = ()  # only these problems (any split); empty: all
    limit_samples: Optional[int] = None
    n_samples: int = 1
    prompting: Prompting = Prompting()
    sandbox: Sandbox = Sandbox()
    grading: Grading = Grading()
    output: Output = Output()

    @property
    def model(self) -> str:
        return self.generation.model

    @property
    def with_background(self) -> bool:
        return self.prompting.with_background
