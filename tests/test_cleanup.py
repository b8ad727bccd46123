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
