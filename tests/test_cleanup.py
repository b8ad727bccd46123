"""Ownership of sandbox containers: only this host's and this PID namespace's dead runs are swept."""
import os
import socket

from harness.sandbox import cleanup


def test_owner_alive_by_host_pid_and_namespace():
    mine = cleanup.owner_labels()
    assert cleanup.owner_alive(mine) is True
    dead = dict(mine, **{cleanup.L_PID: "999999999"})
    assert cleanup.owner_alive(dead) is False
    recycled = dict(mine, **{cleanup.L_PID_START: "1"})
    assert cleanup.owner_alive(recycled) is False
    other_host = dict(dead, **{cleanup.L_HOST: socket.gethostname() + "-x"})
    assert cleanup.owner_alive(other_host) is None
    other_ns = dict(dead, **{cleanup.L_PIDNS: "pid:[1]"})  # e.g. a harness container sharing the hostname
    assert cleanup.owner_alive(other_ns) is None
    assert os.readlink("/proc/self/ns/pid") == mine[cleanup.L_PIDNS]


def test_sigint_ignored_by_the_parent_shell_still_interrupts():
    """`scicode_eval ... &` from a shell without job control starts with SIGINT ignored; the
    CLI's handlers must still turn `kill -INT` into KeyboardInterrupt (exit 130), not swallow it."""
    import subprocess
    import sys
    code = ("import os, signal, time\n"
            "from harness.sandbox import cleanup\n"
            "cleanup.install(owns_signals=True)\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "    print('swallowed')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: __import__("signal").signal(2, __import__("signal").SIG_IGN))
    assert p.stdout.strip() == "interrupted", p.stdout + p.stderr


def test_engine_closed_without_its_loop_awaits_nothing():
    """A Ctrl-C can cut asyncio.run's own shutdown short, leaving the run's main coroutine to
    be closed later by the garbage collector, with no loop: its cleanup must not await (an
    httpx close there raised "not in async context" onto stderr as 'Exception ignored')."""
    import asyncio
    import threading
    import types

    import httpx

    from harness.pipeline import Engine

    class Client:
        def __init__(self):
            self.http = httpx.AsyncClient()
            self.closed = False

        async def aclose(self):
            await self.http.aclose()
            self.closed = True

    never = types.SimpleNamespace(started=threading.Event(), start_error=None)
    run = types.SimpleNamespace(problems=[], config=types.SimpleNamespace(n_samples=1), verifier=never)
    engine = types.SimpleNamespace(run=run, exec_tasks=[], client=Client(), chain=None)
    loop = asyncio.new_event_loop()
    task = loop.create_task(Engine.main(engine))
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()
    task.get_coro().close()   # raised AsyncLibraryNotFoundError before
    assert not engine.client.closed

    # in its loop, the same coroutine does close the client
    engine.client = Client()
    loop = asyncio.new_event_loop()
    task = loop.create_task(Engine.main(engine))
    loop.run_until_complete(asyncio.sleep(0.1))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    assert engine.client.closed


def _python(code: str, timeout: float = 60):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_signal_in_the_event_loop_cancels_at_an_await_and_raises_nowhere_else():
    """Inside run_loop a Ctrl-C raises nothing at the line that runs (inside anyio's or
    asyncio's bookkeeping that corrupted them: a cancel scope's RuntimeError, a run that
    hung): the task is cancelled where it awaits, its cleanup can still await, and the
    interrupt is raised once the loop is done."""
    code = ("import asyncio, os, signal\n"
            "from harness.sandbox import cleanup\n"
            "from harness.run.loop import run_loop\n"
            "cleanup.install(owns_signals=True)\n"
            "seen = []\n"
            "async def main():\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(100000): pass   # the handler runs in here\n"
            "        seen.append('ran on')\n"
            "        await asyncio.sleep(30)\n"
            "    except asyncio.CancelledError:\n"
            "        seen.append('cancelled')\n"
            "        await asyncio.sleep(0)\n"
            "        seen.append('awaited')\n"
            "        raise\n"
            "try:\n"
            "    run_loop(main())\n"
            "except KeyboardInterrupt:\n"
            "    print(seen, 'KeyboardInterrupt')\n")
    p = _python(code)
    assert p.stdout.strip() == "['ran on', 'cancelled', 'awaited'] KeyboardInterrupt", (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr


def test_a_process_stuck_unwinding_a_signal_still_leaves_by_the_deadline():
    """Whatever the unwinding does (a join that never returns, a lock held by a frozen
    thread), the process ends EXIT_WITHIN s after the signal, with its message, exit 128+n."""
    import time
    code = ("import os, signal, sys, time\n"
            "from harness.sandbox import cleanup\n"
            "cleanup.EXIT_WITHIN = 1.0\n"
            "cleanup.install(owns_signals=True, farewell=lambda n: print('bye', n, file=sys.stderr))\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "finally:\n"
            "    time.sleep(30)   # stuck\n")
    t0 = time.monotonic()
    p = _python(code)
    assert p.returncode == 143, (p.returncode, p.stderr)
    assert p.stderr.strip() == "bye 15", p.stderr
    assert time.monotonic() - t0 < 20
