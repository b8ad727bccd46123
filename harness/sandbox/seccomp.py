"""The bwrap sandbox's seccomp filter: a classic BPF program written out in Python.

No compiler or libseccomp is needed at run time: `python -m harness.sandbox.seccomp` writes
``seccomp-<arch>.bpf`` beside this file (they ship with the package), and the bwrap backend
passes that file to ``bwrap --seccomp FD``. tests/test_bwrap_backend.py checks that the
shipped files are what this module generates, and the syscall numbers against libseccomp's
tables where its Python bindings (Debian python3-seccomp) are installed.

The filter returns EPERM for: ptrace, process_vm_readv/writev, the mount family, unshare,
setns, clone with any namespace flag (CLONE_NEWUSER...), keyctl/add_key/request_key, bpf,
perf_event_open, userfaultfd, io_uring, kexec, module loading, sched_setaffinity, syslog,
open_by_handle_at; clone3 gets ENOSYS (its flags sit in memory a filter cannot read; libc
then uses clone); socket() of any family but AF_UNIX gets EAFNOSUPPORT; TIOCSTI is denied;
a system call of another ABI (i386, x32) kills the process. Everything else is allowed.
"""
from __future__ import annotations

import errno
import platform
import struct
from pathlib import Path

_HERE = Path(__file__).resolve().parent

# AUDIT_ARCH_* and the numbers of the calls the filter looks at, per architecture.
ARCHES = {
    "x86_64": {"audit": 0xC000003E, "x32": True, "nr": {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "sched_setaffinity": 203, "syslog": 103, "open_by_handle_at": 304,
        "clone": 56, "clone3": 435, "socket": 41, "ioctl": 16}},
    "aarch64": {"audit": 0xC00000B7, "x32": False, "nr": {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217, "request_key": 218,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104,
        "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
        "sched_setaffinity": 122, "syslog": 116, "open_by_handle_at": 265,
        "clone": 220, "clone3": 435, "socket": 198, "ioctl": 29}},
}
SPECIAL = ("clone", "clone3", "socket", "ioctl")    # decided on their arguments
DENIED = tuple(n for n in ARCHES["x86_64"]["nr"] if n not in SPECIAL)

NAMESPACE_FLAGS = 0x7E020000     # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX = 1
TIOCSTI = 0x5412

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24        # offsets in struct seccomp_data (low words)


def _errno(code: int) -> int:
    return 0x00050000 | code


def _program(arch: str) -> list:
    """Instructions as (code, jt, jf, k); jt/jf may be label names, resolved by `assemble`."""
    a = ARCHES[arch]
    nr = a["nr"]
    prog: list = [(_LD_ABS, 0, 0, _ARCH), (_JEQ, 1, 0, a["audit"]), (_RET, 0, 0, _KILL),
                  (_LD_ABS, 0, 0, _NR)]
    if a["x32"]:
        prog.append((_JGE, "kill", 0, 0x40000000))
    prog += [(_JEQ, "deny", 0, nr[name]) for name in DENIED]
    prog += [(_JEQ, "clone", 0, nr["clone"]), (_JEQ, "nosys", 0, nr["clone3"]),
             (_JEQ, "socket", 0, nr["socket"]), (_JEQ, "ioctl", 0, nr["ioctl"]),
             (_RET, 0, 0, _ALLOW)]
    prog += ["clone:", (_LD_ABS, 0, 0, _ARG0), (_JSET, "deny", 0, NAMESPACE_FLAGS),
             (_RET, 0, 0, _ALLOW),
             "socket:", (_LD_ABS, 0, 0, _ARG0), (_JEQ, "allow", 0, AF_UNIX),
             (_RET, 0, 0, _errno(errno.EAFNOSUPPORT)),
             "ioctl:", (_LD_ABS, 0, 0, _ARG1), (_JEQ, "deny", 0, TIOCSTI),
             "allow:", (_RET, 0, 0, _ALLOW),
             "deny:", (_RET, 0, 0, _errno(errno.EPERM)),
             "nosys:", (_RET, 0, 0, _errno(errno.ENOSYS)),
             "kill:", (_RET, 0, 0, _KILL)]
    return prog


def assemble(prog: list) -> bytes:
    labels, pos = {}, 0
    for item in prog:
        if isinstance(item, str):
            labels[item.rstrip(":")] = pos
        else:
            pos += 1
    out, pos = [], 0
    for item in prog:
        if isinstance(item, str):
            continue
        code, jt, jf, k = item
        jt, jf = (labels[j] - pos - 1 if isinstance(j, str) else j for j in (jt, jf))
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp: jump out of range")
        out.append(struct.pack("<HBBI", code, jt, jf, k))
        pos += 1
    return b"".join(out)


def generate(arch: str) -> bytes:
    return assemble(_program(arch))


def filter_path(arch: str | None = None) -> Path:
    return _HERE / f"seccomp-{arch or platform.machine()}.bpf"


def write_all() -> list[Path]:
    paths = []
    for arch in ARCHES:
        p = filter_path(arch)
        p.write_bytes(generate(arch))
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(p)
