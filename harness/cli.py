"""`scicode-harness`: admin commands. Each group lives in harness/commands/<group>.py."""
import importlib

import typer

app = typer.Typer(help="SciCode harness admin: data, image, sandbox, targets, reference endpoint, doctor, sweep.",
                  no_args_is_help=True, add_completion=False)

# (module, attribute, name) -- sub-apps are added as groups, plain functions as commands
_GROUPS = [
    ("harness.commands.data", "app", "data"),
    ("harness.commands.image", "app", "image"),
    ("harness.commands.sandbox", "app", "sandbox"),
    ("harness.commands.targets", "app", "targets"),
]
_COMMANDS = [
    ("harness.commands.sandbox", "sweep", "sweep"),
    ("harness.commands.reference", "serve_reference", "serve-reference"),
    ("harness.commands.selftest", "selftest", "selftest"),
    ("harness.commands.doctor", "doctor", "doctor"),
]


def _load(module, attr):
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


for _m, _a, _n in _GROUPS:
    _sub = _load(_m, _a)
    if _sub is not None:
        app.add_typer(_sub, name=_n)
for _m, _a, _n in _COMMANDS:
    _fn = _load(_m, _a)
    if _fn is not None:
        app.command(_n)(_fn)


def main():
    app()


if __name__ == "__main__":
    main()
