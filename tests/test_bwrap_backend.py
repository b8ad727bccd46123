"""The bwrap backend beyond the red-team suite: its seccomp filter, the targets out of a
candidate's reach (and within it under process), the verifier's own sandbox, auto's tiers,
and gold dev scoring 1.0/1.0 through the whole pipeline.

Needs bubblewrap and the built 2024 environment (`make setup` installs and builds both); a
missing one fails with the command to run, never a skip.
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from harness.sandbox import Job, Limits, SandboxUnavailable
from harness.sandbox import seccomp

BIN = Path(sys.executable).parent
LIMITS = Limits(timeout=20, memory="1g", pids=64, fsize="8m", tmpfs="32m", output=64 << 10)


@pytest.fixture(scope="module")
def bwrap():
    from harness.sandbox.bwrap_backend import BwrapBackend
    try:
        be = BwrapBackend(limits=LIMITS, workers=2)
    except SandboxUnavailable as exc:
        pytest.fail(f"{exc} (make setup installs bubblewrap and builds the environments)")
    yield be
    be.close()


def run(be, code, **changes):
    job = Job(code=textwrap.dedent(code), limits=Limits(**{**LIMITS.__dict__, **changes}))
    t0 = time.monotonic()
    o = be.run(job)
    o.wall = time.monotonic() - t0
    return o


def last_json(o) -> dict:
    assert o.status == "ok", o.to_dict()
    return json.loads(o.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the seccomp filter

def test_shipped_filters_are_the_generated_ones():
    for arch in seccomp.ARCHES:
        assert seccomp.filter_path(arch).read_bytes() == seccomp.generate(arch), \
            f"run `python -m harness.sandbox.seccomp` to regenerate {seccomp.filter_path(arch).name}"


def test_syscall_numbers_match_libseccomp():
    probe = ("import json, seccomp\n"
             "arches = {'x86_64': seccomp.Arch.X86_64, 'aarch64': seccomp.Arch.AARCH64}\n"
             f"names = {sorted(seccomp.ARCHES['x86_64']['nr'])!r}\n"
             "print(json.dumps({a: {n: seccomp.resolve_syscall(v, n) for n in names} "
             "for a, v in arches.items()}))\n")
    p = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True)
    if p.returncode != 0 and "No module named 'seccomp'" in p.stderr and os.geteuid() != 0:
        pytest.skip("libseccomp's Python bindings (Debian python3-seccomp) are not installed")
    assert p.returncode == 0, p.stderr
    want = json.loads(p.stdout)
    for arch, table in seccomp.ARCHES.items():
        assert table["nr"] == want[arch], arch


def _bpf_run(prog: bytes, arch: int, nr: int, args=(0, 0)) -> int:
    """What a classic-BPF seccomp program returns for one seccomp_data (the kernel's semantics
    for the opcodes the filter uses): lets the aarch64 filter be checked on this x86_64 host."""
    import struct
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args, 0, 0, 0, 0)
    ins = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    for _ in range(len(ins)):           # forward jumps only: at most one pass
        assert pc < len(ins), "a jump past the end"
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            acc, pc = struct.unpack_from("<I", data, k)[0], pc + 1
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35, 0x45):
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
        else:
            raise AssertionError(f"opcode {code:#x} not modelled")
    raise AssertionError("the program ran off its end")


@pytest.mark.parametrize("arch", list(seccomp.ARCHES))
def test_each_shipped_filter_decides_as_documented(arch):
    """Each shipped filter, run by a BPF interpreter: the denied calls get EPERM, clone only
    with namespace flags, clone3 ENOSYS, sockets other than AF_UNIX EAFNOSUPPORT, TIOCSTI EPERM,
    other calls pass, and another ABI (or x32) is killed."""
    prog = seccomp.filter_path(arch).read_bytes()
    a = seccomp.ARCHES[arch]
    nr, audit = a["nr"], a["audit"]
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys, eafno = (0x50000 | e for e in (1, 38, 97))
    for name in seccomp.DENIED:
        assert _bpf_run(prog, audit, nr[name]) == eperm, name
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert _bpf_run(prog, audit, nr["clone"], (flag | 17, 0)) == eperm, hex(flag)   # CLONE_NEW*
    assert _bpf_run(prog, audit, nr["clone"], (0x01200011, 0)) == allow         # fork's flags
    assert _bpf_run(prog, audit, nr["clone3"]) == enosys
    assert _bpf_run(prog, audit, nr["socket"], (1, 0)) == allow                 # AF_UNIX
    for family in (2, 10, 16, 17):                                              # INET, INET6, NETLINK, PACKET
        assert _bpf_run(prog, audit, nr["socket"], (family, 0)) == eafno
    assert _bpf_run(prog, audit, nr["ioctl"], (1, 0x5412)) == eperm             # TIOCSTI
    assert _bpf_run(prog, audit, nr["ioctl"], (1, 0x5401)) == allow             # TCGETS
    for other in range(0, 450):   # every other call number passes
        if other not in nr.values():
            assert _bpf_run(prog, audit, other) == allow, other
    assert _bpf_run(prog, 0x40000003, 0) == kill                                # i386
    other_arch = next(v["audit"] for k, v in seccomp.ARCHES.items() if k != arch)
    assert _bpf_run(prog, other_arch, 0) == kill
    if a["x32"]:
        assert _bpf_run(prog, audit, 0x40000000 | 0) == kill


def test_ptrace_on_its_init_is_eperm_not_a_hang(bwrap):
    o = run(bwrap, """
        import ctypes, errno, json, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        res = {}
        for name, req in (("attach", 16), ("seize", 0x4206)):
            rc = libc.ptrace(req, 1, 0, 0)
            res[name] = errno.errorcode.get(ctypes.get_errno()) if rc != 0 else "attached"
        try:
            os.kill(1, signal.SIGSTOP)     # init of a PID namespace ignores it from inside
        except OSError as e:
            res["sigstop"] = errno.errorcode.get(e.errno)
        rc = libc.ptrace(0, 0, 0, 0)       # PTRACE_TRACEME
        res["traceme"] = errno.errorcode.get(ctypes.get_errno()) if rc != 0 else "traced"
        print(json.dumps(res))
    """, timeout=10)
    res = last_json(o)
    assert res["attach"] == res["seize"] == res["traceme"] == "EPERM", res
    assert o.wall < 5, o.wall


def test_seccomp_denies_the_listed_calls(bwrap):
    nr = seccomp.ARCHES[platform.machine()]["nr"]
    o = run(bwrap, f"""
        import ctypes, errno, json, socket
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def call(n, *args):
            ctypes.set_errno(0)
            rc = libc.syscall(n, *[ctypes.c_long(a) for a in args])
            return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno())
        res = {{name: call(n, 0, 0, 0, 0, 0) for name, n in {dict((n, nr[n]) for n in seccomp.DENIED)!r}.items()}}
        res["clone(CLONE_NEWUSER)"] = call({nr["clone"]}, 0x10000000 | 17, 0, 0, 0, 0)
        res["clone3"] = call({nr["clone3"]}, 0, 0)
        for fam in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"):
            try:
                socket.socket(getattr(socket, fam), socket.SOCK_DGRAM).close()
                res[fam] = "ok"
            except OSError as e:
                res[fam] = errno.errorcode.get(e.errno)
        print(json.dumps(res))
    """)
    res = last_json(o)
    assert {k: v for k, v in res.items() if k in seccomp.DENIED or k.startswith("clone(")} == \
        {k: "EPERM" for k in list(seccomp.DENIED) + ["clone(CLONE_NEWUSER)"]}, res
    assert res["clone3"] == "ENOSYS", res
    assert res["AF_UNIX"] == "ok" and {res[f] for f in ("AF_INET", "AF_INET6", "AF_NETLINK",
                                                       "AF_PACKET")} == {"EAFNOSUPPORT"}, res


# ---------------------------------------------------------------- targets out of reach

SEARCH = """
import json, os, time
end = time.monotonic() + 40
found = set()
for top in ["/tmp", "/root", "/home", "/var", "/opt", "/work", "/"]:
    for d, dirs, files in os.walk(top):
        if time.monotonic() > end:
            break
        if d == "/":
            dirs[:] = [x for x in dirs if x not in ("proc", "sys", "dev")]
        for x in dirs:
            if x == "scicode-harness":
                found.add(os.path.join(d, x))
        for f in files:
            if f.endswith(".h5"):
                found.add(os.path.join(d, f))
for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    found.update(a.decode() for a in args if a.endswith(b".h5"))
print(json.dumps(sorted(found)))
"""


@pytest.fixture(scope="module")
def planted():
    """A targets file any user can read, as a careless shared cache would leave it."""
    d = Path(tempfile.mkdtemp(prefix="scicode-planted-"))
    (d / "targets").mkdir()
    (d / "targets" / "dev.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    for p in (d, d / "targets"):
        p.chmod(0o755)
    (d / "targets" / "dev.h5").chmod(0o644)
    yield d / "targets" / "dev.h5"
    shutil.rmtree(d)


def test_a_candidate_searching_for_targets_finds_them_under_process_only(bwrap, planted):
    from harness.sandbox.process_backend import ProcessBackend
    with ProcessBackend(limits=LIMITS, workers=1) as proc:   # the harness's own interpreter
        under_process = last_json(run(proc, SEARCH, timeout=90))
    under_bwrap = last_json(run(bwrap, SEARCH, timeout=90))
    fixtures = "/site-packages/h5py/tests/"    # h5py's own test files, in the read-only venv
    under_process = [f for f in under_process if fixtures not in f]
    print(f"\nunder process: {under_process}\nunder bwrap: {under_bwrap}")
    assert str(planted) in under_process, under_process
    assert [f for f in under_bwrap if not (f.startswith("/env/") and fixtures in f)] == [], under_bwrap


def test_the_targets_file_is_never_bound(bwrap):
    argv, cwd, env, fds, cleanup = bwrap._prepare(LIMITS)
    try:
        binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    finally:
        cleanup()
    assert "--bind" not in argv and not any(a.endswith(".h5") for a in argv)
    allowed = {"/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", str(bwrap.venv)}
    assert set(binds) <= allowed | set(bwrap.base_binds), binds
    assert cwd == "/" and set(env) == {"PATH"}


def test_the_verifier_runs_in_a_sandbox_of_its_own(bwrap):
    svc = bwrap.service("import json, os\n"
                        "print(json.dumps({'uid': os.getuid(), 'root': sorted(os.listdir('/')),"
                        " 'pids': [p for p in os.listdir('/proc') if p.isdigit()]}), flush=True)\n"
                        "import sys; sys.stdin.readline()\n", "verifier")
    try:
        res = json.loads(svc.readline(30))
    finally:
        svc.close()
    assert res["uid"] == 65534 and "root" not in res["root"] and "work" not in res["root"], res
    assert len(res["pids"]) <= 3, res   # its own PID namespace: no candidate, no harness


# ---------------------------------------------------------------- auto's tiers

def test_auto_takes_bwrap_without_docker_then_process(monkeypatch, caplog):
    from harness.sandbox import bwrap_backend, registry
    monkeypatch.setattr(registry, "docker_client",
                        lambda n: (_ for _ in ()).throw(SandboxUnavailable("no socket")))
    be = registry.get_backend("auto", workers=1, env="2024", warm=False)
    be.close()
    assert (be.name, be.tier) == ("bwrap", "bwrap") and "no Docker daemon" in be.tier_reason
    assert "with full isolation" in be.tier_reason

    def refuse(*a, **k):
        raise SandboxUnavailable("bwrap cannot start a sandbox here: Operation not permitted")
    monkeypatch.setattr(bwrap_backend, "BwrapBackend", refuse)
    be = registry.get_backend("auto", workers=1, env="2024", warm=False)
    be.close()
    assert (be.name, be.tier) == ("process", "process") and "bwrap unavailable" in be.tier_reason
    assert "targets included" in caplog.text


def test_without_proc_the_job_still_runs(bwrap):
    from harness.sandbox.bwrap_backend import BwrapBackend
    with BwrapBackend(limits=LIMITS, workers=1, proc=False) as be:
        res = last_json(run(be, "import json, os, numpy\nprint(json.dumps(os.path.exists('/proc/self')))\n"))
    assert res is False


# ---------------------------------------------------------------- gold dev, as root

def gold_dev(tmp_path, dev_targets, url, *extra):
    out = tmp_path / "out"
    p = subprocess.run([str(BIN / "scicode_eval"), "--model", "gold", "--url", url, "--split", "dev",
                        "--test-data", str(dev_targets), "--output-dir", str(out), "--quiet", *extra],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(next((out / "scicode_results").glob("*.json")).read_text()), p


def test_gold_dev_scores_1_under_bwrap(tmp_path, dev_targets, gold_url):
    t0 = time.monotonic()
    res, _ = gold_dev(tmp_path, dev_targets, gold_url, "--sandbox", "bwrap")
    print(f"\ngold dev under bwrap as uid {os.geteuid()}: {time.monotonic() - t0:.1f}s")
    assert (res["steps_pass@1"], res["problems_pass@1"]) == (1.0, 1.0)
    assert res["run"]["sandbox"] == "bwrap"
    assert res["run"]["sandbox_isolation"] == {"tier": "bwrap", "why": "--sandbox bwrap",
                                               "targets_readable": False}


def test_sandbox_run_cli(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("import os\nprint(os.getuid(), sorted(os.listdir('/')))\n")
    p = subprocess.run([str(BIN / "scicode-harness"), "sandbox", "run", str(prog), "--backend", "bwrap",
                        "--json"], capture_output=True, text=True, timeout=120)
    obj = json.loads(p.stdout)
    assert p.returncode == 0 and obj["status"] == "ok" and obj["backend"] == "bwrap", p.stderr
    assert obj["stdout"].startswith("65534 ") and "'root'" not in obj["stdout"], obj


def test_root_whose_namespace_maps_to_host_root_is_refused():
    """`unshare -Ur` run by root: no uid 65534 to drop to, and its root is the host's."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a non-root harness has no host root to leak")
    code = ("from harness.sandbox.bwrap_backend import BwrapBackend\n"
            "try:\n    BwrapBackend()\nexcept Exception as e:\n    print(e)\n")
    p = subprocess.run(["unshare", "-Ur", sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert "bwrap would run jobs as host root" in p.stdout, p.stdout + p.stderr
