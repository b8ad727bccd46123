"""gVisor (runsc) as a sandbox runtime: resolution, the doctor's hint, bounded starts and
the removal of runtime processes `docker rm` leaves behind."""
import os
import subprocess
import sys
import time
import uuid

import pytest

from harness.sandbox import Job, Limits, SandboxUnavailable
from harness.sandbox import cleanup
from harness.sandbox import runtime as rt


class FakeClient:
    def __init__(self, runtimes, default="runc"):
        self._info = {"Runtimes": runtimes, "DefaultRuntime": default}

    def info(self):
        return self._info


def test_resolve_default_runtime_asks_for_nothing():
    assert rt.resolve(FakeClient({"runc": {}}), None) == ("runc", None)
    assert rt.resolve(FakeClient({"runc": {}}), "runc") == ("runc", None)
    assert rt.resolve(FakeClient({"runc": {}, "runsc": {}}), "runsc") == ("runsc", "runsc")
    # a daemon whose default is something else gets runc by name
    assert rt.resolve(FakeClient({"runc": {}, "runsc": {}}, default="runsc"), "runc") == ("runc", "runc")
    with pytest.raises(SandboxUnavailable, match="unknown sandbox runtime"):
        rt.resolve(FakeClient({"runc": {}}), "crun")


def test_missing_runsc_says_how_to_get_it_in_one_line():
    with pytest.raises(SandboxUnavailable) as ei:
        rt.resolve(FakeClient({"runc": {}}), "runsc")
    msg = str(ei.value)
    assert "\n" not in msg and "apt-get install -y runsc" in msg and "kill -HUP" in msg
    assert '"runtimeArgs": ["--network=none"]' in msg and "--sandbox-runtime runc" in msg


def test_doctor_without_runsc_prints_the_snippet(monkeypatch):
    from typer.testing import CliRunner
    from harness.cli.admin import app
    import docker
    monkeypatch.setattr(rt, "registered", lambda client: ({"runc": {}}, "runc"))
    monkeypatch.setattr("harness.sandbox.docker_backend.probe_runtime",
                        lambda client, image, name, timeout=60.0: "6.1.0")

    class Img:
        id = "sha256:x"
        tags = ["scicode-sandbox:x"]
    monkeypatch.setattr(docker, "from_env", lambda **k: object())
    monkeypatch.setattr("harness.sandbox.image_lookup.find_image", lambda client: Img())
    from harness.cli.commands import doctor
    lines = []
    monkeypatch.setattr(doctor.typer, "echo", lambda s="", **k: lines.append(s))
    doctor._runtimes()
    runsc = [l for l in lines if "runtime runsc" in l]
    assert len(runsc) == 1 and runsc[0].startswith("warn") and "apt-get install -y runsc" in runsc[0]
    assert any(l.startswith("ok    runtime runc") for l in lines)
    assert app is not None


def test_orphaned_runsc_processes_are_found_and_killed():
    """A process that looks like a runsc sandbox of a container the daemon does not know."""
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    p = subprocess.Popen(["runsc-sandbox", "-c", "import time; time.sleep(60)",
                          f"--bundle=/run/containerd/x/moby/{cid}"], executable=sys.executable)
    k8s = subprocess.Popen(["runsc-sandbox", "-c", "import time; time.sleep(60)",   # not Docker's
                            f"--bundle=/run/containerd/x/k8s.io/{cid[::-1]}"], executable=sys.executable)
    try:
        deadline = time.monotonic() + 10
        while not rt.runtime_processes({cid}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rt.runtime_processes({cid}) == [(p.pid, cid, "runsc-sandbox")]

        class Client:
            class api:
                base_url = "http+docker://localhost"

                @staticmethod
                def containers(all=True):
                    return [{"Id": "f" * 64}]
        class Remote(Client):
            class api(Client.api):
                base_url = "http://10.0.0.1:2375"
        assert rt.reap_orphans(Remote) == [] and p.poll() is None    # not this host's daemon
        assert (p.pid, cid, "runsc-sandbox") in rt.reap_orphans(Client)
        assert p.wait(10) == -9
        assert rt.runtime_processes({cid}) == []
        assert k8s.poll() is None and rt.runtime_processes({cid[::-1]}) == []
    finally:
        for proc in (p, k8s):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.mark.docker
def test_runsc_start_past_its_deadline_is_infra_and_leaves_nothing(docker_client, sandbox_image,
                                                                   monkeypatch):
    rts, _ = rt.registered(docker_client)
    if rts is not None and "runsc" not in rts:
        if os.environ.get("SCICODE_SKIP_RUNSC") == "1":
            pytest.skip("SCICODE_SKIP_RUNSC=1 and runsc is not registered")
        pytest.fail(rt.INSTALL_HINT)
    from harness.sandbox.docker_backend import DockerBackend
    monkeypatch.setenv("SCICODE_SANDBOX_START_TIMEOUT", "0.01")   # no runsc start is that quick
    reaped = []
    real_reap = rt.reap
    monkeypatch.setattr(rt, "reap", lambda cid: reaped.append(cid) or real_reap(cid))
    run_id = "runsc-hang-" + uuid.uuid4().hex[:6]
    lim = Limits(timeout=20, memory="128m")
    be = DockerBackend(image=sandbox_image.id, explicit_image=True, run_id=run_id, warm=False,
                       limits=lim, runtime="runsc")
    try:
        o = be.run(Job(code="print(1)", limits=lim))
        assert o.status == "infra" and "did not start within 0.01s" in o.stderr, o.to_dict()
    finally:
        be.close()
    assert reaped, "the timed-out start was not cleaned up"
    cid = reaped[0]
    deadline = time.monotonic() + 20        # the daemon may still be finishing that start
    while time.monotonic() < deadline:
        cleanup.reap_runtime_leftovers(docker_client)
        if not rt.runtime_processes({cid}) and not cleanup.list_containers(docker_client, run_id):
            break
        time.sleep(0.5)
    assert cleanup.list_containers(docker_client, run_id) == []
    assert rt.runtime_processes({cid}) == []
