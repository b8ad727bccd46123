"""`scicode_eval` end to end: validate -> generate (async) -> execute (pipelined) -> score -> report."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from harness.data import dataset, testdata, verified
from harness.errors import UserError
from harness.run import candidate, compare, envs, generate, grade, overflow, prompts, report, schedule, score, usage
from harness.run.config import Generation, GradingMode, RunConfig
from harness.run.finish import EXIT_FAIL_UNDER, EXIT_GEN_ERRORS, finish  # noqa: F401 (re-exported)
from harness.run.grade.reader import ReaderClosed, TargetReader
from harness.run.grade.verifier import VERIFIER_SOURCE, Verifier, VerifierError
from harness.run.loop import run_loop
from harness.run.outputs import OutputError, output as _output, setup_logging as _setup_logging
from harness.run.preflight import check_endpoint
from harness.run.store import Store, make_key
from harness.run.status import StepStatus
from harness.sandbox import JOB_ENV, Limits, TestResult, boundary, cleanup
from harness.sandbox.envs import DEFAULT_ENV, VERIFIER_ENV
from harness.sandbox.runner import parse_size
from harness.util.paths import sha256_file
from harness.util.progress import Progress

log = logging.getLogger("scicode_eval")


class InfraError(Exception):
    """The sandbox failed for reasons that are not the model's; the run stops."""


class Interrupted(Exception):
    """The backend was shut under a running job (Ctrl-C, SIGTERM): no verdict."""


@dataclass
class Run:
    config: RunConfig
    problems: list[dict]
    test_data: Path
    gen_cfg: Any
    template: str
    regex: Optional[str]
    limits: Any
    out: Path
    backend: Any = None                          # the first environment's
    backends: dict = field(default_factory=dict)  # env -> backend (and the verifier's env)
    sampling: dict = field(default_factory=dict)
    records: list = field(default_factory=list)
    test_data_id: str = ""
    verifier: Any = None
    reader: Any = None
    splits: dict = field(default_factory=dict)   # step id -> [grade.Split]
    no_target: set = field(default_factory=set)  # steps the test data lacks (--allow-missing-targets)
    pin: Any = None                              # SciCode-Verified's data pin (--benchmark verified)
    usage: dict = field(default_factory=dict)    # (sample, step id) -> its generation's token usage

    def prefilled(self, problem: dict, step_id: str) -> str:
        """The reference code of a never-asked step: the verified JSONL carries its own."""
        if self.pin is not None:
            return verified.prefilled_code(problem, step_id)
        return dataset.prefilled_code(step_id)

    def data_meta(self) -> Optional[dict]:
        return verified.describe(self.pin) if self.pin is not None else None

    @property
    def split(self) -> str:
        return self.config.split

    @property
    def grading(self) -> GradingMode:
        return self.config.grading.mode


# ---------------------------------------------------------------- validation
def gen_config(g: Generation) -> generate.GenConfig:
    if g.api_key_name and not g.api_key:
        raise UserError(f"the API key variable {g.api_key_name} named by the config is not set")
    try:
        return generate.GenConfig.from_params(
            url=g.url, model=g.model, params=g.extra_params, temperature=g.temperature,
            api_key=g.api_key, concurrency=g.concurrency, backoff_base=g.backoff_base)
    except ValueError as e:
        raise UserError(str(e)) from None


def prepare(config: RunConfig) -> Run:
    split, sb, pr = config.split, config.sandbox, config.prompting
    if sb.kind == "process" and sb.runtime not in (None, "runc"):   # before the endpoint check
        raise UserError(f"--sandbox-runtime {sb.runtime} needs the docker sandbox, not --sandbox process")
    pin = None
    if config.benchmark == "verified":
        pin = verified.load_pin(config.verified_pin) if config.verified_pin else verified.official_pin()
        problems = verified.load_problems(pin)
    else:
        problems = (dataset.read_jsonl(config.problems) if config.problems else dataset.load_problems(split))
    if config.problem_ids:
        source = "SciCode-Verified" if pin else (str(config.problems) if config.problems else f"the {split} split")
        problems = dataset.select(problems, config.problem_ids, source)
    tname = prompts.template_name(pr.with_background, pr.template_type)
    template = dataset.template(tname)
    regex = dataset.regex(pr.regex_path) if pr.regex_path else None
    if config.limit_samples:
        problems = problems[: config.limit_samples]
    given = config.grading.test_data or (verified.test_data_path(pin) if pin else None)
    test_data = testdata.require(given, split)
    no_target = testdata.check_steps(test_data, problems, config.grading.allow_missing_targets)
    cfg = gen_config(config.generation)
    no_room = overflow.check_budget(config.generation.max_context_tokens, cfg.max_tokens)
    if no_room:
        raise UserError(no_room)
    limits = Limits(timeout=sb.timeout, memory=sb.memory, cpus=sb.cpus)
    run = Run(config=config, problems=problems, test_data=test_data, gen_cfg=cfg,
              template=template, regex=regex, limits=limits, out=config.output.dir,
              test_data_id=sha256_file(test_data), pin=pin)
    run.sampling = dict(cfg.sampling_params(), template=tname, regex=regex, prefill=pr.prefill)
    run.no_target = set(no_target)
    if config.output.baseline:   # refuse now what the end would refuse
        compare.early_check(config.output.baseline, {
            "split": split, "benchmark": config.benchmark, "grading": {"mode": config.grading.mode},
            "test_data_sha256": run.test_data_id}, {str(p["problem_id"]) for p in problems})
    if run.grading == "strict":
        for p in problems:
            for i, step in enumerate(p["sub_steps"]):
                if step["step_number"] not in dataset.SKIPPED_STEPS:   # [] for a step without tests
                    run.splits[step["step_number"]] = grade.plan(p, i)
    return run


def open_backends(run: Run, workers: int) -> None:
    run.backends = envs.open_backends(run.config, run.limits, workers)
    run.backend = run.backends[run.config.sandbox.envs[0]]
    line = envs.isolation_line(run.backend)
    if line:   # also under --quiet, like every warning
        print(f"scicode_eval: {line}", file=sys.stderr)


def close_backends(run: Run) -> None:
    for be in run.backends.values():
        be.close()


# ---------------------------------------------------------------- stages
VERIFIER_MEMORY = 1 << 30   # bytes of address space the verifier gets at least
HEAVY_REPORT = 1 << 20   # bytes of report: a large outcome, graded one at a time (peak memory)
SMALL_WAITING = 4        # small outcomes that may wait for the grader at once


class Engine:
    def __init__(self, run: Run, workers: int, progress: Progress):
        self.run, self.progress = run, progress
        cache = run.out / "scicode_cache"
        self.gens = Store(cache / "generations.jsonl")
        self.verdicts = Store(cache / "verdicts.jsonl")
        self.client = generate.Client(run.gen_cfg)
        # candidates that may still need a sandbox: the backend warms no more containers than this;
        # a later environment gets a job only when the earlier ones did not pass (all, with --full-envs)
        sb = run.config.sandbox
        self.queue = schedule.JobQueue(run.backend, workers, progress.total, name="sandbox")
        self.queues = {sb.envs[0]: self.queue}
        for env in sb.envs[1:]:
            self.queues[env] = self.queue.sibling(run.backends[env], progress.total if sb.full_envs else 0)
        from concurrent.futures import ThreadPoolExecutor
        self.grader = ThreadPoolExecutor(1, thread_name_prefix="grade")
        # outcomes waiting for the grader, bounded (peak memory): one large one at a time, a
        # few small ones; a worker with the next outcome waits for a slot of its kind
        self._grade_slots = {True: threading.Semaphore(1), False: threading.Semaphore(SMALL_WAITING)}
        self.exec_tasks: list[asyncio.Future] = []
        bg = "with_background" if run.config.with_background else "without_background"
        name = report.model_short(run.config.model)
        self.prompt_dir = run.out / "prompt" / name / bg
        self.code_dir = run.out / "generated_code" / name / bg
        self.infra: Optional[str] = None
        if run.grading == "strict":   # a new verifier program means new verdicts
            self.grading_key = [grade.GRADING_VERSION, make_key(verifier=VERIFIER_SOURCE)]
        else:
            self.grading_key = "inprocess"

    async def chain(self, problem: dict, sample: int) -> None:
        """One sample's chain through a problem: each step sees this chain's own earlier code."""
        run = self.run
        codes: list[str] = []
        steps = problem["sub_steps"]
        for idx, step in enumerate(steps):
            if cleanup.signalled():   # the handler's KeyboardInterrupt may have been dropped
                raise Interrupted("signal")
            sid = step["step_number"]
            if sid in dataset.SKIPPED_STEPS:
                codes.append(prompts.prefill(step, run.prefilled(problem, sid), run.config.prompting.prefill))
                continue
            prompt = prompts.build_prompt(problem, idx, codes, run.template, run.config.with_background)
            too_long = overflow.precheck(self.client.request_body(prompt, sample),
                                         run.config.generation.max_context_tokens)
            if too_long:   # before the stored generations too: the same flags give the same verdicts
                self._stopped(problem, idx, sample, "context_overflow", too_long, overflow.later(sid))
                return
            key = make_key(model=run.config.model, prompt=prompt, sample=sample, sampling=run.sampling,
                           step=sid)   # 46.1 and 68.1 share a prompt: still two samples
            rec = self.gens.get(key)
            if rec is None:
                # the chain with the most steps left goes first: it bounds the run's length
                res = await self.client.complete(prompt, seed=sample, priority=len(steps) - idx)
                if res.context_overflow:   # the model's failure; later prompts are only longer
                    self._stopped(problem, idx, sample, "context_overflow", res.error, overflow.later(sid))
                    return
                if not res.ok:
                    self._stopped(problem, idx, sample, "gen_error", res.error)
                    return
                rec = {"text": res.text, "attempts": res.attempts, "finish_reason": res.finish_reason,
                       "usage": usage.normalize(res.usage)}
                _output(self.gens.put, key, rec)
            run.usage[(sample, sid)] = rec.get("usage")
            self.progress.generated()
            answer, unended = prompts.split_reasoning(rec["text"], run.config.prompting.reasoning_end_token)
            if unended or rec.get("finish_reason") == "length":
                # never graded on a draft: the step is `truncated`, the chain goes on without its code
                why = "reasoning never ended" if unended else "reply cut off (finish_reason: length)"
                self._truncated(problem, idx, sample, prompt, why)
                codes.append("")
                continue
            code = prompts.extract_code(answer, run.regex)
            _output(self._save, problem["problem_id"], idx, sample, prompt, code, codes)
            cand = candidate.Candidate(problem["problem_id"], sid, idx, sample, code, list(codes))
            self.exec_tasks.append(asyncio.ensure_future(self.execute(cand, problem)))
            codes.append(code)

    def _stopped(self, problem, idx, sample, status: StepStatus, error: str, later: Optional[str] = None):
        """The chain ends at step `idx`: it and every later step get `status` (`later`: their error)."""
        for step in problem["sub_steps"][idx:]:
            if step["step_number"] in dataset.SKIPPED_STEPS:
                continue
            self.queue.skip()
            self.run.records.append({"problem_id": problem["problem_id"], "step_id": step["step_number"],
                                     "sample": sample, "status": status, "error": error, "duration": 0.0})
            self.progress.generated(failed=status == "gen_error")
            self.progress.executed(status)
            error = later or error

    def _truncated(self, problem, idx, sample, prompt, why):
        step = problem["sub_steps"][idx]
        self.queue.skip()
        _output(self._save, problem["problem_id"], idx, sample, prompt, "", [])
        self.run.records.append({"problem_id": problem["problem_id"], "step_id": step["step_number"],
                                 "sample": sample, "status": "truncated", "error": why, "duration": 0.0})
        self.progress.executed("truncated")

    def _save(self, pid, idx, sample, prompt, code, chain):
        stem = f"{pid}.{idx + 1}_{sample}"
        self.prompt_dir.mkdir(parents=True, exist_ok=True)
        self.code_dir.mkdir(parents=True, exist_ok=True)
        (self.prompt_dir / f"{stem}.txt").write_text(prompt, encoding="utf-8")
        (self.code_dir / f"{stem}.py").write_text(code, encoding="utf-8")

    def _targets(self, step_id: str, n: int) -> list:
        from concurrent.futures import CancelledError
        try:   # one reader thread owns every h5py handle (no lock left held at exit)
            return self.run.reader.get(step_id, n)
        except (CancelledError, ReaderClosed):
            raise Interrupted(step_id) from None

    def _grade(self, cand, problem, outcome) -> tuple[StepStatus, list[TestResult]]:
        run = self.run
        step = problem["sub_steps"][cand.index]
        if run.grading != "strict":
            return candidate.verdict(outcome, len(step.get("test_cases") or []))
        try:
            return grade.grade(outcome, run.splits[cand.step_id], problem["required_dependencies"],
                               lambda: self._targets(cand.step_id, len(step["test_cases"])),
                               run.verifier, targets_key=f"{run.test_data_id}:{cand.step_id}")
        except VerifierError as e:
            if run.backend.closing:
                raise Interrupted(cand.step_id) from None
            raise InfraError(f"verifier failure on {cand.step_id}: {e}") from None

    def _run_sync(self, cand, problem, env: str) -> tuple[str, Any]:
        """On a sandbox worker: ("rec", stored verdict) or ("outcome", (key, Outcome)) to grade,
        for the candidate in sandbox environment `env`."""
        run = self.run
        backend, queue = run.backends[env], self.queues[env]
        if cand.step_id in run.no_target:   # never a pass, never dropped from the denominator
            queue.skip()
            return "rec", {"status": "no_target", "tests": [], "duration": 0.0,
                           "error": "no target for this step in the test data"}
        step = problem["sub_steps"][cand.index]
        # targets are named by the data file's hash and the step, so keys never copy large arrays
        tests = ([[sp.sandbox, sp.verifier] for sp in run.splits[cand.step_id]]
                 if run.grading == "strict" else step["test_cases"])   # what actually runs
        key = make_key(code=candidate.program(problem["required_dependencies"], cand.chain, cand.code),
                       tests=tests, targets=[run.test_data_id, cand.step_id],
                       image=backend.image, backend=backend.name, env=JOB_ENV,
                       runtime=backend.runtime,
                       limits=[run.limits.timeout, run.limits.memory, run.limits.cpus],
                       grading=self.grading_key,
                       # the process backend has no image: the era keeps verdicts apart (2024 keys as before)
                       **({"sandbox_env": env} if env != DEFAULT_ENV else {}))
        rec = self.verdicts.get(key)
        if rec is not None:
            queue.skip()
            return "rec", dict(rec, key=key)
        if run.grading == "strict":   # the sandbox gets the program and tests, never targets
            job = candidate.build_job(cand, problem, None, run.limits,
                                     tests=grade.sandbox_tests(run.splits[cand.step_id]))
        else:
            targets = self._targets(cand.step_id, len(step["test_cases"]))
            job = candidate.build_job(cand, problem, targets, run.limits)
            del targets  # only the encoded copy travels on
        outcome = queue.run(job, cand.step_id)   # infra failures retried there
        del job   # the payload is sent; only the outcome waits for grading
        if backend.closing:   # shut under this job: its outcome may be the shutdown's
            raise Interrupted(cand.step_id)
        if outcome.status == "infra":
            where = f", {env} environment" if len(run.backends) > 1 else ""
            raise InfraError(f"sandbox failure on {cand.step_id} (sample {cand.sample}{where}): "
                             f"{(outcome.stderr or '').strip()[-300:]}")
        while not self._grade_slot(outcome).acquire(timeout=0.5):
            if backend.closing:
                raise Interrupted(cand.step_id)
        return "outcome", (key, outcome)

    def _grade_slot(self, outcome) -> threading.Semaphore:
        """The slot an outcome waits in for the grader: large reports one at a time."""
        return self._grade_slots[outcome.report is not None and outcome.report.size > HEAVY_REPORT]

    def _grade_sync(self, cand, problem, key: str, outcome, env: str) -> dict:
        """On the grading thread (one: the verifier serialises anyway, and only one large
        candidate's values are in memory at a time), so sandbox workers go on to the next job."""
        run = self.run
        t0 = time.monotonic()
        try:
            status, tests = self._grade(cand, problem, outcome)
        finally:
            self._grade_slot(outcome).release()
        if run.backends[env].closing:
            raise Interrupted(cand.step_id)
        graded = time.monotonic() - t0
        if status in ("pass", "fail"):   # the tests ran: a fair measure of the step's cost
            self.queues[env].record(cand.step_id, outcome.duration)
        rec = {"status": status, "tests": [t.to_dict() for t in tests],
               "error": candidate.error_summary(outcome, tests),
               "exit_code": outcome.exit_code, "duration": round(outcome.duration, 3),
               "grade_seconds": round(graded, 3), "stdout_tail": boundary.tail(outcome.stdout),
               "stderr_tail": boundary.tail(outcome.stderr),
               "truncated": outcome.truncated, "backend": outcome.backend, "image": outcome.image,
               "limits": {"timeout": run.limits.timeout, "memory": run.limits.memory,
                          "cpus": run.limits.cpus}}
        _output(self.verdicts.put, key, rec)
        return dict(rec, key=key)

    async def execute(self, cand, problem) -> None:
        """The candidate in the first environment, then in the next while it has not passed."""
        sb = self.run.config.sandbox
        tried: dict[str, dict] = {}
        while (env := envs.next_env(sb.envs, tried, sb.full_envs)) is not None:
            if tried and not sb.full_envs:
                self.queues[env].add()   # a job its warm pool did not expect
            tried[env] = await self._execute_in(cand, problem, env)
        rec = dict(envs.combine(sb.envs, tried), problem_id=cand.problem_id, step_id=cand.step_id,
                   sample=cand.sample)
        self.run.records.append(rec)
        self.progress.executed(rec["status"])

    async def _execute_in(self, cand, problem, env: str) -> dict:
        fut = self.queues[env].submit(cand.step_id, self._run_sync, cand, problem, env)
        kind, value = await asyncio.wrap_future(fut)
        if kind == "outcome":
            key, outcome = value
            del value
            value = await asyncio.get_running_loop().run_in_executor(
                self.grader, self._grade_sync, cand, problem, key, outcome, env)
        return value

    async def main(self) -> None:
        run = self.run
        chains = [self.chain(p, s) for s in range(run.config.n_samples) for p in run.problems]
        loopless = False
        try:
            await asyncio.gather(verifier_up(run.verifier), *chains)
            while self.exec_tasks:  # chains append as they go; drain until none are pending
                pending, self.exec_tasks = self.exec_tasks, []
                await asyncio.gather(*pending)
        except GeneratorExit:
            # closed without its loop (a Ctrl-C cut asyncio.run's own shutdown short): nothing
            # can be awaited now, and the process is ending, connections with it
            loopless = True
            raise
        finally:
            if not loopless:
                for t in self.exec_tasks:
                    t.cancel()
                await self.client.aclose()


def run(config: RunConfig) -> int:
    t0 = time.time()
    run_ = prepare(config)
    out = config.output
    log_dir = out.log_dir or run_.out / "logs"
    try:
        _setup_logging(log_dir, out.quiet)
    except OSError as e:
        raise UserError(f"cannot write the log directory {log_dir}: {e}") from None
    run_loop(check_endpoint(run_.gen_cfg))
    workers = config.sandbox.workers or os.cpu_count() or 1
    open_backends(run_, workers)
    try:
        start_grading(run_)
    except BaseException:
        close_backends(run_)
        raise
    total_steps = sum(len(score.scored_steps(p)) for p in run_.problems) * config.n_samples
    progress = Progress(total_steps, quiet=out.quiet, style=out.progress)
    try:
        engine = Engine(run_, workers, progress)
    except OSError as e:
        stop_grading(run_)
        close_backends(run_)
        raise UserError(f"cannot write the output directory {run_.out}: {e}") from None
    try:
        with progress:
            run_loop(engine.main())
    except Interrupted:
        raise KeyboardInterrupt from None   # the signal's own handling: exit 130, work kept
    except (InfraError, OutputError) as e:
        raise UserError(f"stopped: {e}; finished work is kept, rerun to resume") from None
    finally:
        engine.queue.stop()   # queued jobs cancelled, durations saved
        engine.grader.shutdown(wait=False, cancel_futures=True)
        stop_grading(run_)
        close_backends(run_)
        engine.queue.join()   # jobs cut short notice the closed backend and end
        engine.gens.close()
        engine.verdicts.close()
    cleanup.raise_if_signalled()
    try:
        return finish(run_, time.time() - t0)
    except OSError as e:
        raise UserError(f"stopped: cannot write the results to {run_.out} ({e}); finished work "
                        "is kept, rerun to resume") from None


def start_grading(run_: Run) -> None:
    """Targets reader, and (strict) the verifier, starting beside the first jobs."""
    run_.reader = TargetReader(run_.test_data)
    if run_.grading != "strict":
        msg = ("--grading inprocess: model code shares a process with targets and verdicts and can "
               "forge them (UNSAFE; for parity debugging only)")
        log.warning(msg)
        print(f"scicode_eval: warning: {msg}", file=sys.stderr)
        return
    # pinned, whatever the candidates run in; its memory bounded as a job's (at least VERIFIER_MEMORY)
    run_.verifier = Verifier(run_.backends[VERIFIER_ENV],
                             memory=max(parse_size(run_.limits.memory), VERIFIER_MEMORY))
    run_.verifier.start_background()   # jobs start meanwhile; Engine.main waits for its answer


async def verifier_up(verifier: Optional[Verifier]) -> None:
    """Ends the run at once (exit 2) if the verifier cannot start, before any verdict."""
    if verifier is None:
        return
    while not verifier.started.is_set():
        await asyncio.sleep(0.05)
    if verifier.start_error is not None:
        raise UserError(f"cannot start the verifier: {verifier.start_error}")


def stop_grading(run_: Run) -> None:
    if run_.verifier is not None:
        run_.verifier.close()
    if run_.reader is not None:
        run_.reader.close()
