"""The offline base image: Debian bookworm made with ``debootstrap --variant=minbase`` (python3 3.11
+ python3-venv), imported as ``scicode-base:bookworm-py311`` and shared by the sandbox image and the
harness container; reused when present."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.build.common import Say, last_line, run_streaming
from harness.sandbox.image_lookup import ImageError, _get
from harness.util.paths import cache_dir

BASE_REPOSITORY = "scicode-base"
BASE_TAG_NAME = "bookworm-py311"
BASE_TAG = f"{BASE_REPOSITORY}:{BASE_TAG_NAME}"
LABEL_BASE = "org.scicode-harness.base"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("SCICODE_HARNESS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _mounts_under(root: Path) -> list[str]:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    root_s = str(root.resolve())
    points = []
    for line in mounts:
        parts = line.split()
        if len(parts) > 1:
            mp = parts[1].replace("\\040", " ")
            if mp == root_s or mp.startswith(root_s + "/"):
                points.append(mp)
    return points


def _umount_under(root: Path) -> list[str]:
    """Unmount anything debootstrap left mounted below root (deepest first);
    return what is still mounted."""
    for mp in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _mounts_under(root)


def _rm_rootfs(root: Path) -> None:
    # never rmtree through a leftover bind mount (e.g. of the host's /dev or /proc)
    left = _umount_under(root)
    if left:
        raise ImageError(f"cannot clean {root}: still mounted: {', '.join(left[:3])}; unmount and remove it by hand")
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- offline base

_ROOTFS_PRUNE = (
    "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*", "var/cache/apt/*.bin",
    "var/lib/apt/lists/*", "var/cache/debconf/*-old", "var/log/*", "debootstrap",
    "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
    "usr/share/lintian/*", "usr/share/linda/*", "var/cache/man/*", "tmp/*", "var/tmp/*",
)


def _prune_rootfs(root: Path) -> None:
    for pattern in _ROOTFS_PRUNE:
        for p in root.glob(pattern):
            if p.is_symlink() or p.is_file():
                p.unlink(missing_ok=True)
            elif p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def ensure_base(client, progress: Say = print, force: bool = False) -> str:
    """Make sure the debootstrapped base image exists; return its tag."""
    if not force and _get(client, BASE_TAG) is not None:
        progress(f"base image {BASE_TAG} present")
        return BASE_TAG
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.exists(p)), None)
    if not debootstrap:
        raise ImageError("debootstrap not found: install it (apt-get install debootstrap, "
                         "or run scripts/ensure-docker.sh) to build the offline base image")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ImageError("debootstrap needs root to build the offline base image; "
                         "run `scicode-harness image build` as root once, or use --no-offline with a registry")
    if not shutil.which("tar"):
        raise ImageError("tar not found; it is needed to import the debootstrapped rootfs")
    # not /tmp: it may be a nodev tmpfs, where the chroot's /dev/null would not open
    work = Path(tempfile.mkdtemp(prefix="scicode-base-",
                                 dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None))
    rootfs = work / "rootfs"
    log_path = cache_dir() / "logs" / "debootstrap.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        cmd = [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR]
        progress(f"debootstrap {DEBIAN_SUITE} ({','.join(BASE_PACKAGES)}) from {DEBIAN_MIRROR}")
        rc, tail = run_streaming(cmd, progress, log_path, prefix="  debootstrap: ")
        if rc != 0:
            raise ImageError(f"debootstrap failed (exit {rc}): {last_line(tail, 'no output')} "
                             f"(log: {log_path})")
        check = subprocess.run(
            ["chroot", str(rootfs), "/usr/bin/python3", "-c",
             "import sys, ensurepip, venv; assert sys.version_info[:2] == (3, 11), sys.version"],
            capture_output=True, text=True)
        if check.returncode != 0:
            raise ImageError("the debootstrapped python3 is unusable: "
                             + last_line(check.stderr + check.stdout, "unknown error"))
        _prune_rootfs(rootfs)
        tarball = work / "rootfs.tar"
        tar = subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
                             capture_output=True, text=True)
        if tar.returncode != 0:
            raise ImageError(f"tar of the base rootfs failed: {last_line(tar.stderr, 'unknown error')}")
        _rm_rootfs(rootfs)
        progress(f"importing {BASE_TAG} ({tarball.stat().st_size / 2**20:.0f} MiB)")
        try:
            client.api.import_image_from_file(
                str(tarball), repository=BASE_REPOSITORY, tag=BASE_TAG_NAME,
                changes=[f"ENV PATH={BASE_PATH}", "ENV LANG=C.UTF-8",
                         f"LABEL {LABEL_BASE}=debootstrap-{DEBIAN_SUITE}-{'+'.join(BASE_PACKAGES)}",
                         'CMD ["python3"]'])
        except Exception as e:
            raise ImageError(f"docker import of the base failed: {last_line(str(e), type(e).__name__)}") from None
        if _get(client, BASE_TAG) is None:
            raise ImageError(f"docker import finished but {BASE_TAG} is missing")
        progress(f"base image {BASE_TAG} ready in {time.monotonic() - t0:.0f}s")
        return BASE_TAG
    finally:
        _rm_rootfs(work)
