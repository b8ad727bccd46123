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
