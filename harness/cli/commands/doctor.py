"""`scicode-harness doctor`: what is ready and what is missing, one line each."""
from __future__ import annotations

import platform
import typer


def _check(name: str, fn) -> bool:
    try:
        detail = fn()
        typer.echo(f"ok    {name}: {detail}")
        return True
    except Exception as e:  # noqa: BLE001 - doctor reports every failure as one line
        typer.echo(f"FAIL  {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return False


def _runtimes() -> None:
    """One line per OCI runtime: registered or not, and a one-line probe in each."""
    try:
        import docker
        from harness.sandbox import image_lookup as image
        from harness.sandbox import runtime as rt
        from harness.sandbox.docker_backend import probe_runtime
        client = docker.from_env()
        rts, default = rt.registered(client)
        found = image.find_image(client)
    except Exception as e:  # noqa: BLE001 - the engine/image lines already say why
        typer.echo(f"skip  runtimes: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    names = sorted(rts) if rts is not None else [default]
    typer.echo(f"info  runtimes registered with the daemon: {', '.join(names)} (default {default})")
    for name in rt.RUNTIMES:
        if rts is not None and name not in rts and name != default:
            typer.echo(f"warn  runtime {name}: {rt.INSTALL_HINT} (then `scicode-harness doctor` again)"
                       if name == "runsc" else f"warn  runtime {name}: not registered")
            continue
        if found is None:
            typer.echo(f"skip  runtime {name}: no sandbox image to probe with")
            continue
        _check(f"runtime {name}", lambda n=name: f"probe ran, kernel {probe_runtime(client, found.id, n)}")


def _no_docker_lines() -> None:
    """bwrap, the built environments, and the tier `--sandbox auto` gets here, and why."""
    from harness.sandbox import SandboxUnavailable
    from harness.sandbox.envs import ENVS
    from harness.sandbox.registry import get_backend
    from harness.sandbox.venvs import build_hint, find_env

    def env_line(env: str):
        found = find_env(env)
        if found is None:
            raise RuntimeError(f"not built (needed by --sandbox bwrap): {build_hint(env)}")
        return str(found)

    def bwrap():
        be = get_backend("bwrap", workers=1)
        be.close()
        return f"a probe job ran ({be.tier}; uid 65534, seccomp filter {be.filter.name})"
    for env in ENVS:
        _check(f"environment {env}", lambda e=env: env_line(e))
    _check("bwrap sandbox", bwrap)
    try:
        be = get_backend("auto", workers=1, warm=False)
        be.close()
        typer.echo(f"info  sandbox auto: {be.tier} ({be.tier_reason})")
    except SandboxUnavailable as e:
        typer.echo(f"info  sandbox auto: none ({e})")


def doctor():
    """Check Python, nemo-evaluator, the Docker engine, the sandbox image, data and targets,
    which sandbox runtimes (runc, runsc) the daemon has, with a probe in each, bwrap and the
    built environments, and which isolation tier `--sandbox auto` gets here and why."""
    from importlib.metadata import version

    def ne():
        v = version("nemo-evaluator")
        if not v.startswith("0.2."):
            raise RuntimeError(f"nemo-evaluator {v} found; this plugin needs >=0.2.8,<0.3")
        return v

    def engine():
        import docker
        c = docker.from_env()
        info = c.version()
        return f"{info.get('Version')} (API {info.get('ApiVersion')})"

    def img(env: str):
        import docker
        from harness.sandbox import image_lookup as image
        found = image.find_image(docker.from_env(), env=env)
        if found is None:
            raise RuntimeError(f"not built: run `scicode-harness image build --env {env}`")
        return (f"{found.tags[0] if found.tags else found.id[:19]} "
                f"(lock {image.lock_digest(env=env)[:12]})")

    def data():
        from harness.data import dataset
        bad = [n for n, ok in dataset.verify() if not ok]
        if bad:
            raise RuntimeError(f"failed verification: {', '.join(bad)}; run `scicode-harness data pull --force`")
        return str(dataset.data_dir())

    def test_data():
        from harness.data import testdata
        p = testdata.resolve_test_data(None)
        if p is None:
            raise RuntimeError("test_data.h5 not found (needed for the test split): "
                               "`scicode-harness data pull-test-data` or --test-data PATH")
        return str(p)

    def dev_targets():
        from harness.util.paths import targets_path
        p = targets_path("dev")
        if not p.is_file():
            raise RuntimeError("not built: `scicode-harness targets build --split dev` (make run does it)")
        return str(p)

    from harness.sandbox.envs import DEFAULT_ENV, ENVS
    results = [_check("python", lambda: platform.python_version()), _check("nemo-evaluator", ne),
               _check("docker engine", engine), _check(f"sandbox image {DEFAULT_ENV}", lambda: img(DEFAULT_ENV)),
               _check("dataset", data), _check("test data", test_data), _check("dev targets", dev_targets)]
    for env in ENVS:   # the other eras: needed by --sandbox-envs and the verified tasks
        if env != DEFAULT_ENV and not _check(f"sandbox image {env}", lambda e=env: img(e)):
            typer.echo(f"info  the {env} image is needed by --sandbox-envs {env} and the scicode_verified tasks")
    if results[2]:
        _runtimes()
    _no_docker_lines()
    if not all(results[:5]):
        raise typer.Exit(1)
