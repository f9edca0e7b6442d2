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

from layerbuild.util.process import pid_alive, sigint_held

_PID_IN_NAME = re.compile(r"\.(\d+)\.[^.]*\.(?:zip|json)\.tmp$")
_PID_IN_WORKDIR = re.compile(r"-(\d+)-[^-]*$")


def temp_prefix(stem: str) -> str:
    return f".{stem}.{os.getpid()}."


def workdir_prefix(stem: str) -> str:
    return f"layerbuild-{stem}-{os.getpid()}-"


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
