"""`scicode-harness`: admin commands. Each group lives in harness/cli/commands/<group>.py."""
import sys

import typer

from harness.errors import HarnessError

from harness.cli.commands import compare, data, doctor, env, image, reference, sandbox, selftest, targets

app = typer.Typer(help="SciCode harness admin: data, env, image, sandbox, targets, reference endpoint, doctor, sweep, compare, report.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(data.app, name="data")
app.add_typer(env.app, name="env")
app.add_typer(image.app, name="image")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(targets.app, name="targets")
app.command("sweep")(sandbox.sweep)
app.command("serve-reference")(reference.serve_reference)
app.command("selftest")(selftest.selftest)
app.command("doctor")(doctor.doctor)
app.command("compare")(compare.compare)
app.command("report")(compare.report)


def main():
    try:
        app()
    except HarnessError as e:   # a command that did not say it in its own words
        print(f"scicode-harness: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
