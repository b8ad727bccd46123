"""`scicode_eval` end to end: validate -> generate (async) -> execute (pipelined) -> score -> report."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from harness import assemble, dataset, prompts, report, schedule, score
from harness.sandbox import JOB_ENV
from harness.store import make_key
from harness.progress import Progress

log = logging.getLogger("scicode_eval")


class UserError(Exception):
    """Bad input or environment; one line, exit 2, nothing generated."""


class InfraError(Exception):
    """The sandbox failed for reasons that are not the model's; the run stops."""


class Interrupted(Exception):
    """The backend was shut under a running job (Ctrl-C, SIGTERM): no verdict."""


INFRA_RETRIES = 2


@dataclass
class Run:
    args: Any
    problems: list[dict]
    split: str
    test_data: Path
    gen_cfg: Any
    template: str
    regex: Optional[str]
    limits: Any
    out: Path
    backend: Any = None
    sampling: dict = field(default_factory=dict)
    records: list = field(default_factory=list)
    test_data_id: str = ""
    h5_lock: threading.Lock = field(default_factory=threading.Lock)


# ---------------------------------------------------------------- validation
def resolve_split(args) -> str:
    if args.split and args.include_dev and args.split != "all":
        raise UserError(f"--include-dev means --split all, but --split {args.split} was given")
    return args.split or ("all" if args.include_dev else "test")


def resolve_test_data(args, split: str) -> Path:
    from harness import testdata
    try:
        path = testdata.resolve_test_data(args.test_data)
    except testdata.TestDataError as e:
        raise UserError(str(e)) from None
    if args.test_data is not None and (path is None or not Path(path).is_file()):
        raise UserError(f"test data not found: {args.test_data}")
    if path is None and split == "dev":
        from harness.paths import targets_path
        own = targets_path("dev")
        path = own if own.is_file() else None
    if path is None:
        hint = ("; for the dev split you can also build targets: scicode-harness targets build --split dev"
                if split == "dev" else "")
        raise UserError("test data (test_data.h5) not found: pass --test-data PATH, set SCICODE_TEST_DATA, "
                        "or run `scicode-harness data pull-test-data`" + hint)
    return Path(path)


def check_test_data(path: Path, problems: list[dict]) -> None:
    from harness import h5targets
    need = {s["step_number"]: len(s["test_cases"]) for p in problems for s in p["sub_steps"]
            if s.get("test_cases")}
    try:
        missing = h5targets.missing_steps(path, need)
    except OSError as e:
        raise UserError(f"cannot read test data {path}: {e}") from None
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"test data {path} lacks {len(missing)} step(s) this run needs: {shown}")


def gen_config(args):
    from harness import generate
    key_name = os.environ.get("SCICODE_API_KEY_NAME")
    api_key = os.environ.get("API_KEY") or None
    if key_name and not api_key:
        raise UserError(f"the API key variable {key_name} named by the config is not set")
    backoff = float(os.environ.get("SCICODE_GEN_BACKOFF_BASE", "1.0"))
    try:
        return generate.GenConfig.from_params(
            url=args.url, model=args.model, params=args.extra_params or "", temperature=args.temperature,
            api_key=api_key, concurrency=args.concurrent_requests, backoff_base=backoff)
    except ValueError as e:
        raise UserError(str(e)) from None


def prepare(args) -> Run:
    from harness.sandbox import Limits
    split = resolve_split(args)
    try:
        problems = (dataset.read_jsonl(args.problems) if args.problems else dataset.load_problems(split))
        tname = prompts.template_name(args.with_background, args.prompt_template_type)
        template = dataset.template(tname)
        regex = dataset.regex(args.regex_path) if args.regex_path else None
    except dataset.DataError as e:
        raise UserError(str(e)) from None
    from harness.cli_eval import parse_fail_under
    try:
        parse_fail_under(args.fail_under)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.limit_samples:
        problems = problems[: args.limit_samples]
    test_data = resolve_test_data(args, split)
    check_test_data(test_data, problems)
    from harness.dataset import sha256_file
    cfg = gen_config(args)
    limits = Limits(timeout=args.sandbox_timeout, memory=args.sandbox_memory, cpus=args.sandbox_cpus)
    run = Run(args=args, problems=problems, split=split, test_data=test_data, gen_cfg=cfg,
              template=template, regex=regex, limits=limits, out=Path(args.output_dir),
              test_data_id=sha256_file(test_data))
    run.sampling = dict(cfg.sampling_params(), template=tname, regex=regex, prefill=args.prefill)
    return run


def open_backend(run: Run, workers: int):
    from harness.sandbox import SandboxUnavailable
    from harness.sandbox.select import get_backend
    try:
        return get_backend(run.args.sandbox, image=run.args.sandbox_image,
                           explicit_image=bool(run.args.sandbox_image), workers=workers,
                           run_id=uuid.uuid4().hex[:12], limits=run.limits,
                           runtime=getattr(run.args, "sandbox_runtime", None))
    except SandboxUnavailable as e:
        raise UserError(str(e)) from None


# ---------------------------------------------------------------- stages
class Engine:
    def __init__(self, run: Run, workers: int, progress: Progress):
        from harness.generate import Client
        from harness.store import Store
        self.run, self.progress = run, progress
        cache = run.out / "scicode_cache"
        self.gens = Store(cache / "generations.jsonl")
        self.verdicts = Store(cache / "verdicts.jsonl")
        self.client = Client(run.gen_cfg)
        self.history = schedule.History()   # longest expected job first
        self.pool = schedule.PriorityPool(workers, name="sandbox")
        self.exec_tasks: list[asyncio.Future] = []
        bg = "with_background" if run.args.with_background else "without_background"
        name = report.model_short(run.args.model)
        self.prompt_dir = run.out / "prompt" / name / bg
        self.code_dir = run.out / "generated_code" / name / bg
        self.infra: Optional[str] = None
        # candidates that may still need a sandbox: the backend warms no more containers than this
        self.unstarted = progress.total
        self._count_lock = threading.Lock()
        run.backend.jobs_left(self.unstarted)

    def _started(self) -> None:
        """One candidate no longer needs a fresh sandbox (running now, cached, or never generated)."""
        with self._count_lock:   # hints in order: a stale higher count would over-warm
            self.unstarted = max(self.unstarted - 1, 0)
            self.run.backend.jobs_left(self.unstarted)

    async def chain(self, problem: dict, sample: int) -> None:
        """One sample's chain through a problem: each step sees this chain's own earlier code."""
        run = self.run
        codes: list[str] = []
        steps = problem["sub_steps"]
        for idx, step in enumerate(steps):
            sid = step["step_number"]
            if sid in dataset.SKIPPED_STEPS:
                codes.append(prompts.prefill(step, dataset.prefilled_code(sid), run.args.prefill))
                continue
            prompt = prompts.build_prompt(problem, idx, codes, run.template, run.args.with_background)
            key = make_key(model=run.args.model, prompt=prompt, sample=sample, sampling=run.sampling)
            rec = self.gens.get(key)
            if rec is None:
                # the chain with the most steps left goes first: it bounds the run's length
                res = await self.client.complete(prompt, seed=sample, priority=len(steps) - idx)
                if not res.ok:
                    self._gen_failed(problem, idx, sample, res.error)
                    return
                rec = {"text": res.text, "attempts": res.attempts}
                self.gens.put(key, rec)
            self.progress.generated()
            code = prompts.extract_code(rec["text"], run.regex)
            self._save(problem["problem_id"], idx, sample, prompt, code, codes)
            cand = assemble.Candidate(problem["problem_id"], sid, idx, sample, code, list(codes))
            self.exec_tasks.append(asyncio.ensure_future(self.execute(cand, problem)))
            codes.append(code)

    def _gen_failed(self, problem, idx, sample, error):
        for step in problem["sub_steps"][idx:]:
            if step["step_number"] in dataset.SKIPPED_STEPS:
                continue
            self._started()
            self.run.records.append({"problem_id": problem["problem_id"], "step_id": step["step_number"],
                                     "sample": sample, "status": "gen_error", "error": error,
                                     "duration": 0.0})
            self.progress.generated(failed=True)
            self.progress.executed("gen_error")

    def _save(self, pid, idx, sample, prompt, code, chain):
        stem = f"{pid}.{idx + 1}_{sample}"
        self.prompt_dir.mkdir(parents=True, exist_ok=True)
        self.code_dir.mkdir(parents=True, exist_ok=True)
        (self.prompt_dir / f"{stem}.txt").write_text(prompt, encoding="utf-8")
        (self.code_dir / f"{stem}.py").write_text(code, encoding="utf-8")

    def _targets(self, step_id: str, n: int) -> list:
        from harness import h5targets
        with self.run.h5_lock:  # h5py is not safe for concurrent reads of one file
            return h5targets.read_step_targets(self.run.test_data, step_id, n)

    def _execute_sync(self, cand, problem) -> dict:
        run = self.run
        step = problem["sub_steps"][cand.index]
        # targets are named by the data file's hash and the step, so keys never copy large arrays
        key = make_key(code=assemble.program(problem["required_dependencies"], cand.chain, cand.code),
                       tests=step["test_cases"], targets=[run.test_data_id, cand.step_id],
                       image=run.backend.image, backend=run.backend.name, env=JOB_ENV,
                       runtime=run.backend.runtime,
                       limits=[run.limits.timeout, run.limits.memory, run.limits.cpus])
        rec = self.verdicts.get(key)
        self._started()
        if rec is None:
            targets = self._targets(cand.step_id, len(step["test_cases"]))
            job = assemble.build_job(cand, problem, targets, run.limits)
            del targets  # only the encoded copy travels on
            for _ in range(1 + INFRA_RETRIES):
                outcome = run.backend.run(job)
                if outcome.status != "infra":
                    break
            if run.backend.closing:   # shut under this job: its outcome may be the shutdown's
                raise Interrupted(cand.step_id)
            if outcome.status == "infra":
                raise InfraError(f"sandbox failure on {cand.step_id} (sample {cand.sample}): "
                                 f"{(outcome.stderr or '').strip()[-300:]}")
            status, tests = assemble.verdict(outcome)
            if status in ("pass", "fail"):   # the tests ran: a fair measure of the step's cost
                self.history.record(cand.step_id, outcome.duration)
            rec = {"status": status, "tests": tests, "error": assemble.error_summary(outcome, tests),
                   "exit_code": outcome.exit_code, "duration": round(outcome.duration, 3),
                   "stdout_tail": outcome.stdout[-2000:], "stderr_tail": outcome.stderr[-2000:],
                   "truncated": outcome.truncated, "backend": outcome.backend, "image": outcome.image,
                   "limits": {"timeout": run.limits.timeout, "memory": run.limits.memory,
                              "cpus": run.limits.cpus}}
            self.verdicts.put(key, rec)
        return dict(rec, problem_id=cand.problem_id, step_id=cand.step_id, sample=cand.sample, key=key)

    async def execute(self, cand, problem) -> None:
        fut = self.pool.submit(self.history.priority(cand.step_id), self._execute_sync, cand, problem)
        rec = await asyncio.wrap_future(fut)
        self.run.records.append(rec)
        self.progress.executed(rec["status"])

    async def main(self) -> None:
        run = self.run
        chains = [self.chain(p, s) for s in range(run.args.n_samples) for p in run.problems]
        try:
            await asyncio.gather(*chains)
            while self.exec_tasks:  # chains append as they go; drain until none are pending
                pending, self.exec_tasks = self.exec_tasks, []
                await asyncio.gather(*pending)
        finally:
            for t in self.exec_tasks:
                t.cancel()
            await self.client.aclose()


def run(args) -> int:
    t0 = time.time()
    run_ = prepare(args)
    log_dir = Path(args.log_dir) if args.log_dir else run_.out / "logs"
    _setup_logging(log_dir, args.quiet)
    from harness.generate import EndpointError, check_endpoint
    try:
        asyncio.run(check_endpoint(run_.gen_cfg))
    except EndpointError as e:
        raise UserError(str(e)) from None
    workers = args.eval_threads or os.cpu_count() or 1
    run_.backend = open_backend(run_, workers)
    total_steps = sum(len(score.scored_steps(p)) for p in run_.problems) * args.n_samples
    progress = Progress(total_steps, quiet=args.quiet, style=args.progress)
    engine = Engine(run_, workers, progress)
    try:
        with progress:
            asyncio.run(engine.main())
    except Interrupted:
        raise KeyboardInterrupt from None   # the signal's own handling: exit 130, work kept
    except InfraError as e:
        raise UserError(f"stopped: {e}; finished work is kept, rerun to resume") from None
    finally:
        engine.pool.shutdown(wait=False, cancel_futures=True)
        engine.history.save()
        run_.backend.close()
    return finish(run_, time.time() - t0)


def finish(run_: Run, seconds: float) -> int:
    args = run_.args
    verdicts = {(r["sample"], r["step_id"]): r["status"] for r in run_.records}
    sc = score.score(run_.problems, verdicts, args.n_samples)
    records = sorted(run_.records, key=lambda r: (r["sample"], _step_order(r["step_id"])))
    run_.out.mkdir(parents=True, exist_ok=True)
    report.write_records(run_.out / "records.jsonl", records)
    path = report.results_path(run_.out, args.model, args.with_background)
    meta = {"model": args.model, "split": run_.split, "with_background": args.with_background,
            "n_samples": args.n_samples, "limit_samples": args.limit_samples,
            "sandbox": run_.backend.name, "sandbox_runtime": run_.backend.runtime,
            "image": run_.backend.image, "prefill": args.prefill,
            "test_data": str(run_.test_data), "seconds": round(seconds, 1),
            "sampling": run_.sampling}
    report.write_results(path, sc, meta)
    if args.junit_xml:
        report.write_junit(args.junit_xml, records)
    print(report.summary(sc, path))
    from harness.cli_eval import parse_fail_under
    floors = parse_fail_under(args.fail_under)
    below = [k for k, v in floors.items() if (sc.steps if k == "steps" else sc.problems) < v]
    if below:
        print(f"scicode_eval: below --fail-under for {', '.join(below)}")
        return 3
    return 0


def _step_order(step_id: str) -> tuple:
    pid, _, n = step_id.partition(".")
    return (int(pid) if pid.isdigit() else pid, int(n) if n.isdigit() else n)


def _setup_logging(log_dir: Path, quiet: bool) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "scicode_eval.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
