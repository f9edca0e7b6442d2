"""Publishing into the output directory safely when builds are interrupted or run concurrently.

- Temporary names carry the writer's pid (``.STEM.PID.XXXX.zip.tmp``), so a later build can tell
  leftovers of a killed build (pid gone) from the live temp files of a concurrent one.
- The zip + manifest rename pair happens under an exclusive fcntl lock on ``OUT/.STEM.lock`` with
  SIGINT held back, so other layerbuild processes never see (or make) a zip whose manifest
  belongs to another build, and Ctrl-C cannot land between the two renames.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

_PID_IN_NAME = re.compile(r"\.(\d+)\.[^.]*\.(?:zip|json)\.tmp$")
_PID_IN_WORKDIR = re.compile(r"-(\d+)-[^-]*$")


def temp_prefix(stem: str) -> str:
    return f".{stem}.{os.getpid()}."


def workdir_prefix(stem: str) -> str:
    return f"layerbuild-{stem}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(out_dir: Path, stem: str) -> list[Path]:
    """Delete temp files and scratch directories left for this stem by builds that were killed."""
    removed = []
    for path in Path(out_dir).glob(f".{stem}.*.tmp"):
        match = _PID_IN_NAME.search(path.name)
        # Names without a pid come from older layerbuild versions; no live build still uses them.
        if match is None or not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    from layerbuild.util.scratch import candidate_dirs

    for path in [p for folder in candidate_dirs() for p in folder.glob(f"layerbuild-{stem}-*")]:
        match = _PID_IN_WORKDIR.search(path.name)
        if match and path.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def sigint_held():
    """Defer Ctrl-C until the block is done (it is delivered right after).

    The Python-level handler is swapped for one that only records the signal: Python runs signal
    handlers in the main thread whichever thread the OS picked. (Blocking SIGINT with
    pthread_sigmask held it for the main thread only: with worker threads alive the kernel handed it
    to one of them, and the KeyboardInterrupt still landed inside the block.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            if callable(old):
                old(signal.SIGINT, None)  # default_int_handler raises KeyboardInterrupt; an outer hold records it
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


@contextmanager
def publish_lock(out_dir: Path, stem: str):
    """Exclusive lock for replacing OUT/STEM.zip and its manifest (released by the OS if we die)."""
    lock_path = Path(out_dir) / f".{stem}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with sigint_held():
            yield
    finally:
        os.close(fd)  # closing releases the flock


def publish_pair(tmp_zip: Path, zip_path: Path, tmp_manifest: Path, manifest_path: Path) -> None:
    """Rename a finished zip and manifest into place as one step.

    The old manifest goes first: a crash between the renames leaves a zip with no manifest
    (which every reader refuses), never a zip described by another build's manifest.
    """
    with publish_lock(zip_path.parent, zip_path.stem):
        manifest_path.unlink(missing_ok=True)
        os.replace(tmp_zip, zip_path)
        os.replace(tmp_manifest, manifest_path)
        # rename(2) does nothing when both names are hard links to one inode (a cache hit linked
        # into dist/ twice): the temp name would stay behind.
        tmp_zip.unlink(missing_ok=True)
        tmp_manifest.unlink(missing_ok=True)
