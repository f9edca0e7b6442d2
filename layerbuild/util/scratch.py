"""Where a build's scratch tree lives: in memory (/dev/shm) when the machine has room, else the temp dir.

A build creates, rewrites and deletes a few thousand small files (the unpacked wheels, the .pyc
files) that nobody keeps: only the zip in the output directory is. On a tmpfs a file costs about
10 microseconds; on disk filesystems of virtual machines and CI runners it can cost 150-700
(measured on this project's build machine: 1,100 files 0.18 s against 0.01 s; a numpy + Pillow
build's unpack 0.77 s against 0.28 s). So, unless the user chose (LAYERBUILD_SCRATCH_DIR, or
TMPDIR as for any program), a build works in /dev/shm when it is a writable tmpfs with room to
spare and the machine has the memory to back it. Docker's default 64 MB /dev/shm never qualifies.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError

SCRATCH_ENV = "LAYERBUILD_SCRATCH_DIR"
RAM_DIR = Path("/dev/shm")
# Room a build may need in memory: unzipped layers are at most 250 MB, and `build --all` runs
# several targets at once. Below this, the disk is the safer place.
MIN_FREE = 2 << 30


@dataclass(frozen=True)
class RamDir:
    """What the machine says about its memory-backed directory."""

    is_tmpfs: bool
    writable: bool
    free_bytes: int  # room left in the tmpfs
    available_memory: int  # MemAvailable: what backing it would take from


def choose(environ: dict, ram: RamDir | None, system_temp: str) -> tuple[Path, str]:
    """Pure: (scratch directory, why), from the environment and what /dev/shm offers."""
    chosen = (environ.get(SCRATCH_ENV) or "").strip()
    if chosen:
        return Path(chosen), SCRATCH_ENV
    if (environ.get("TMPDIR") or "").strip():
        return Path(system_temp), "TMPDIR"
    if ram and ram.is_tmpfs and ram.writable and min(ram.free_bytes, ram.available_memory) >= MIN_FREE:
        return RAM_DIR, "memory"
    return Path(system_temp), "temp"


def _ram_dir() -> RamDir | None:
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            is_tmpfs = any(fields[1] == str(RAM_DIR) and fields[2] == "tmpfs"
                           for fields in (line.split() for line in mounts) if len(fields) > 2)  # fmt: skip
        if not is_tmpfs:
            return None
        info = os.statvfs(RAM_DIR)
        available = 0
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        return None
    return RamDir(True, os.access(RAM_DIR, os.W_OK | os.X_OK), info.f_bavail * info.f_frsize, available)


def scratch_dir() -> Path:
    """The directory builds make their scratch trees in; a bad LAYERBUILD_SCRATCH_DIR is a one-line error."""
    path, why = choose(dict(os.environ), _ram_dir(), tempfile.gettempdir())
    if why == SCRATCH_ENV:
        problem = _cannot_make_dirs_in(path)
        if problem is not None:
            raise LayerbuildError(f"{SCRATCH_ENV}: {str(path)!r} is not a writable directory {problem}"
                                  "(unset it to let layerbuild choose, or name an existing directory)")  # fmt: skip
    return path


def _cannot_make_dirs_in(path: Path) -> str | None:
    """Why a build could not make its scratch tree in path ("" when plainly not a writable directory), or None. Tried for real: /proc or a read-only
    mount pass os.access() for root, and only creating a directory tells."""
    if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
        return ""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".layerbuild-probe-", dir=path))
    except OSError as exc:
        return f"(creating a directory there fails: {exc.strerror or type(exc).__name__}) "
    return None


def candidate_dirs() -> list[Path]:
    """Every directory a build of this user may have left a scratch tree in (for cleaning up after kills)."""
    found = [Path(tempfile.gettempdir()), RAM_DIR]
    chosen = (os.environ.get(SCRATCH_ENV) or "").strip()
    if chosen:
        found.append(Path(chosen))
    unique = []
    for path in found:
        if path not in unique and path.is_dir():
            unique.append(path)
    return unique
