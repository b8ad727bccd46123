"""`scicode_eval`: every flag of NVIDIA's command (same meaning) plus ours."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, get_args


def _positive_int(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return i


def _non_negative_int(v: str) -> int:
    i = int(v)
    if i < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return i


def _positive_float(v: str) -> float:
    f = float(v)
    if f <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return f


def _non_negative_float(v: str) -> float:
    f = float(v)
    if not f >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return f


def problem_ids(v: str) -> tuple[str, ...]:
    """argparse type of --problem-ids: "12, 13,80" -> ("12", "13", "80"), repeats dropped."""
    ids = [x.strip() for x in v.split(",")]
    if not v.strip() or not all(ids):
        raise argparse.ArgumentTypeError(f"expected ids separated by commas (e.g. 12,13,80), got {v!r}")
    return tuple(dict.fromkeys(ids))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the whole usage text
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _values(literal) -> list[str]:
    return list(get_args(literal))


def parser() -> argparse.ArgumentParser:
    from harness.run import config as C   # the flags' choices are the config's vocabularies
    p = _Parser(prog="scicode_eval",
                                description="SciCode evaluation with every candidate in a hardened sandbox.")
    a = p.add_argument
    # NVIDIA's flags
    a("--model", required=True, help="model name sent in each request")
    a("--url", required=True, help="full chat-completions URL (used exactly as given)")
    a("--output-dir", type=Path, default=Path("eval_results"))
    a("--log-dir", type=Path, default=None, help="run logs (default: OUTPUT_DIR/logs)")
    a("--with-background", action="store_true", help="include scientist background in prompts")
    a("--temperature", type=float, default=0.0)
    a("--limit-samples", type=_positive_int, default=None, help="use only the first N problems")
    a("--n-samples", type=_positive_int, default=1, help="independent chains per problem")
    a("--extra-params", default="", help="k=v,... : top_p, timeout, max_tokens, max_retries, "
      "include_system_prompt; other keys go into the request body")
    a("--include-dev", action="store_true", help="include dev problems (same as --split all)")
    a("--eval-threads", type=_positive_int, default=None, help="sandbox workers (default: CPU count)")
    a("--concurrent-requests", type=_positive_int, default=1, help="requests in flight")
    a("--regex-path", default=None, help="regex file for code extraction (path or packaged name)")
    a("--prompt-template-type", default=None, help="template file name (e.g. background_comment_template.txt)")
    # ours
    a("--benchmark", choices=_values(C.Benchmark), default="scicode",
      help="scicode: the original data; verified: SciCode-Verified (the human-verified correction of "
           "the test split; `scicode-harness data pull --benchmark verified` fetches it)")
    a("--split", choices=_values(C.Split), default=None, help="default: test (all with --include-dev); an explicit --split wins over --include-dev")
    a("--test-data", type=Path, default=None, help="test_data.h5 (else $SCICODE_TEST_DATA, else the cache)")
    a("--sandbox", choices=_values(C.SandboxKind), default="auto")
    a("--sandbox-runtime", choices=_values(C.Runtime), default="runc",
      help="Docker OCI runtime: runsc (gVisor) puts a user-space kernel between candidates "
      "and the host; slower (see README)")
    a("--sandbox-image", default=None, help="sandbox image; overrides the pinned one on purpose "
      "(first environment only)")
    a("--sandbox-envs", default=None,
      help="library eras to run candidates in, in order: 2024 (numpy 1.26/scipy 1.13), 2025 "
           "(numpy 2.4/scipy 1.17) or 2024,2025: a step passes if it passes in either (the second "
           "runs only when the first does not pass). Default: 2024; 2024,2025 for --benchmark verified")
    a("--full-envs", action="store_true",
      help="with several --sandbox-envs, run every one even after a pass (a per-environment breakdown)")
    a("--sandbox-timeout", type=_positive_float, default=1800.0, help="seconds per candidate")
    a("--sandbox-memory", default="4g", help="memory per candidate (swap equal)")
    a("--sandbox-cpus", type=_positive_float, default=1.0)
    a("--junit-xml", type=Path, default=None)
    a("--fail-under", type=parse_fail_under, default=None, help="steps=X[,problems=Y]: exit 3 when a score is below")
    a("--baseline", type=Path, default=None,
      help="an earlier run's output directory (or results JSON): compare at the end, exit 3 when this "
           "run is significantly worse (as `scicode-harness compare --fail-if-worse`)")
    a("--baseline-alpha", type=_probability, default=0.05, help="significance level of --baseline")
    a("--pass-k", type=pass_ks, default=(), help="k values of pass@k, e.g. 1,5 (each <= --n-samples; "
      "default: 1 and n)")
    a("--prefill", choices=_values(C.Prefill), default="verbatim",
      help="code for the never-asked steps 13.6/62.1/76.3: whole file, or upstream's extraction")
    a("--problems", type=Path, default=None,
      help="problems JSONL in SciCode's format (your own problems) instead of --split")
    a("--grading", choices=_values(C.GradingMode), default="strict",
      help="strict: the sandbox computes values and a verifier outside it decides every verdict; "
           "inprocess: upstream's way, verdicts inside the candidate's process (UNSAFE: model code "
           "can forge them; for debugging parity only)")
    a("--max-gen-errors", type=_non_negative_int, default=0,
      help="exit 4 (scores still written) when more steps than this got no answer after retries")
    a("--problem-ids", type=problem_ids, default=(),
      help="only these problems, e.g. 12,13,80 (any split or benchmark; applied before --limit-samples)")
    a("--max-context-tokens", type=_positive_int, default=None,
      help="the model's context window: a prompt estimated (UTF-8 bytes / 4) to exceed it with max_tokens "
           "is not sent and scores context_overflow")
    a("--price-in", type=_non_negative_float, default=None, help="price per million prompt tokens (adds a cost)")
    a("--price-out", type=_non_negative_float, default=None,
      help="price per million completion tokens (reasoning included)")
    a("--reasoning-end-token", default="</think>",
      help="the answer is what follows the last such token (empty: no stripping)")
    a("--allow-missing-targets", action="store_true",
      help="steps the test data lacks score as no_target (never a pass) instead of stopping the run")
    a("--quiet", action="store_true", help="no progress output")
    a("--progress", choices=_values(C.ProgressStyle), default="auto",
      help="bars on a terminal (auto), always bars, or periodic plain lines (logs)")
    return p


def _probability(v: str) -> float:
    f = float(v)
    if not 0 < f < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {v}")
    return f


def pass_ks(v: str) -> tuple[int, ...]:
    """argparse type of --pass-k: "1,5" -> (1, 5)."""
    try:
        ks = sorted({int(x) for x in v.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas (e.g. 1,5), got {v!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"each k must be >= 1, got {v!r}")
    return tuple(ks)


def parse_fail_under(s: str | None) -> dict[str, float]:
    """argparse type of --fail-under: "steps=X[,problems=Y]" -> {"steps": X, "problems": Y}."""
    if not s:
        return {}
    out = {}
    for part in s.split(","):
        key, _, val = part.partition("=")
        key = key.strip()
        try:
            if key not in ("steps", "problems") or not val:
                raise ValueError
            out[key] = float(val)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected steps=X[,problems=Y], got {s!r}") from None
    return out


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name) or default)
    except ValueError:
        from harness.errors import UserError
        raise UserError(f"{name}={env[name]!r} is not a number") from None


def sandbox_envs(text: str | None, default: str) -> tuple:
    """--sandbox-envs (None: the benchmark's default) -> validated envs; a bad value is a UserError."""
    from harness.errors import UserError
    from harness.sandbox.envs import EnvError, parse_envs
    try:
        return parse_envs(text if text is not None and text.strip() else default)
    except EnvError as e:
        raise UserError(str(e)) from None


def run_config(args: argparse.Namespace, env: Mapping[str, str] | None = None):
    """The run's typed settings from the parsed flags and the environment (framework.yml
    renders its values into both: flags, and API_KEY / SCICODE_API_KEY_NAME)."""
    from harness.run import config as C
    from harness.sandbox.envs import ENVS
    env = os.environ if env is None else env
    verified = args.benchmark == "verified"
    gen = C.Generation(
        url=args.url, model=args.model, temperature=args.temperature, extra_params=args.extra_params or "",
        concurrency=args.concurrent_requests,
        api_key=env.get("API_KEY") or None,   # `API_KEY=$UNSET_VAR` renders as empty: unset
        api_key_name=env.get("SCICODE_API_KEY_NAME") or None,
        backoff_base=_env_float(env, "SCICODE_GEN_BACKOFF_BASE", 1.0),
        max_context_tokens=args.max_context_tokens)
    prompting = C.Prompting(with_background=args.with_background, template_type=args.prompt_template_type,
                            regex_path=args.regex_path, prefill=args.prefill,
                            reasoning_end_token=args.reasoning_end_token)
    sandbox = C.Sandbox(kind=args.sandbox, runtime=args.sandbox_runtime, image=args.sandbox_image,
                        timeout=args.sandbox_timeout, memory=args.sandbox_memory, cpus=args.sandbox_cpus,
                        workers=args.eval_threads, process_python=env.get("SCICODE_PROCESS_PYTHON") or None,
                        envs=sandbox_envs(args.sandbox_envs, "2024,2025" if verified else "2024"),
                        full_envs=args.full_envs,
                        env_pythons=MappingProxyType({e: env[f"SCICODE_PROCESS_PYTHON_{e}"] for e in ENVS
                                                      if env.get(f"SCICODE_PROCESS_PYTHON_{e}")}))
    grading = C.Grading(mode=args.grading or "strict", test_data=args.test_data,
                        allow_missing_targets=args.allow_missing_targets)
    output = C.Output(dir=Path(args.output_dir), log_dir=args.log_dir, quiet=args.quiet, progress=args.progress,
                      junit_xml=args.junit_xml, fail_under=MappingProxyType(dict(args.fail_under or {})),
                      max_gen_errors=args.max_gen_errors, price_in=args.price_in, price_out=args.price_out,
                      pass_k=tuple(args.pass_k or ()), baseline=args.baseline, alpha=args.baseline_alpha)
    if output.pass_k and output.pass_k[-1] > args.n_samples:
        from harness.errors import UserError
        raise UserError(f"--pass-k {output.pass_k[-1]} needs at least that many --n-samples (got {args.n_samples})")
    # an explicit --split wins: --include-dev is a task default (aa_scicode, scicode_aa_v2)
    # the user's own `config.params.extra.split` must be able to override
    split = args.split or ("all" if args.include_dev else "test")
    if verified and (split != "test" or args.problems):
        from harness.errors import UserError
        raise UserError("--benchmark verified is SciCode-Verified's test split: drop --split/--include-dev/"
                        "--problems (or use --benchmark scicode)")
    pin = env.get("SCICODE_VERIFIED_PIN") or None
    return C.RunConfig(generation=gen, split=split, benchmark=args.benchmark,
                       verified_pin=Path(pin) if pin else None,
                       problems=args.problems, problem_ids=tuple(args.problem_ids or ()),
                       limit_samples=args.limit_samples,
                       n_samples=args.n_samples, prompting=prompting, sandbox=sandbox, grading=grading,
                       output=output)


def main(argv: list[str] | None = None) -> int:
    from harness.sandbox import cleanup
    # Ctrl-C -> 130, SIGTERM -> 143, from the first moment, and within cleanup.EXIT_WITHIN s
    cleanup.install(owns_signals=True, farewell=_farewell)
    sys.unraisablehook = _unraisable
    threading.excepthook = _thread_failed
    try:
        args = parser().parse_args(argv)
        from harness.errors import HarnessError
        from harness.pipeline import run
        try:
            code = run(run_config(args))
        except HarnessError as e:
            if cleanup.signalled():
                raise
            print(f"scicode_eval: error: {e}", file=sys.stderr)
            code = 2
        cleanup.raise_if_signalled()   # a signal whose KeyboardInterrupt Python dropped
    except BaseException as e:   # KeyboardInterrupt, cleanup.Terminated (SIGTERM), or what a signal broke
        signum = getattr(e, "signum", None) or cleanup.signalled()
        if signum is None and not isinstance(e, KeyboardInterrupt):
            raise
        _farewell(int(signum or signal.SIGINT))
        _leave(128 + int(signum or signal.SIGINT))
    _leave(code)


_said = threading.Lock()


def _farewell(signum: int) -> None:
    """The interrupt message, once (the main thread and the exit deadline may both get here)."""
    if not _said.acquire(blocking=False):
        return
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    try:
        print(f"scicode_eval: {what}; finished work is kept, rerun to resume", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _unraisable(info) -> None:
    """An interrupt raised where Python cannot propagate it (a weakref callback during an
    import, a __del__) is dropped: stay quiet, the run checks for the signal at safe points.
    After a signal, what it broke on the way out is not news either."""
    from harness.sandbox import cleanup
    if isinstance(info.exc_value, KeyboardInterrupt) or cleanup.signalled():
        return
    sys.__unraisablehook__(info)


def _thread_failed(args) -> None:
    """A thread that fails after a signal (an import the interrupt cut short) stays quiet."""
    from harness.sandbox import cleanup
    if cleanup.signalled():
        return
    threading.__excepthook__(args)


def _leave(code: int) -> None:
    """Exit with `code`. When a thread is still running (a job cut short by Ctrl-C that
    has not noticed yet), skip interpreter finalization: a daemon thread frozen there
    while holding a library's lock (h5py, stdio) would hang the exit forever."""
    import threading
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t.is_alive()]
    if not others:
        sys.exit(code)
    from harness.sandbox import cleanup
    cleanup.run_atexit()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)

if __name__ == "__main__":
    main()
