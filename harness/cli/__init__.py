"""The command lines: `scicode_eval` (evaluate) and `scicode-harness` (admin, with its groups in commands/).
The only package that sees argparse or typer."""
