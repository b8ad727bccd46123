"""Build tooling: the sandbox image (image) and the harness container (container). Never imported at
run time: only harness.cli.admin commands and tests import it."""
