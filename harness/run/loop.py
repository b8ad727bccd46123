"""The event loop a run uses, and how a signal reaches it."""
from __future__ import annotations

import asyncio

from harness.sandbox import cleanup


def run_loop(coro):
    """asyncio.run, where SIGINT/SIGTERM cancel the loop's tasks (and the run then raises
    KeyboardInterrupt) instead of raising inside whatever the loop was running."""
    runner = asyncio.Runner()
    loop = runner.get_loop()

    def cancel_all() -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()

    def cancel() -> None:   # in the signal handler
        if loop.is_closed():
            cleanup.raise_if_signalled()
        loop.call_soon_threadsafe(cancel_all)

    try:
        with cleanup.signals_cancel(cancel):
            try:
                return runner.run(coro)
            finally:
                runner.close()
    except asyncio.CancelledError:
        cleanup.raise_if_signalled()
        raise
