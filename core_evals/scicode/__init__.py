"""NeMo Evaluator framework package for scicode-harness (sandboxed SciCode)."""
