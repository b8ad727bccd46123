"""scicode-harness: SciCode evaluation with every candidate in a hardened sandbox."""

__version__ = "0.1.0"
