"""Compiled bytecode, kept across builds: a module compiled once is not compiled again.

Compiling is most of a cold build's CPU (numpy + Pillow: ~2 CPU-seconds), and a recipe change
usually leaves most packages as they were. A .pyc's bytes depend only on the source bytes, the
path recorded in it (co_filename, /opt/python/...), the interpreter that wrote it and the fixed
settings layerbuild compiles with (unchecked-hash, PYTHONHASHSEED=0, no optimisation): the key
covers all of them, with the interpreter identified by its resolved path, size and mtime (an
upgraded interpreter is a new identity).

Files live in $XDG_CACHE_HOME/layerbuild/bytecode/KEY[:2]/KEY.pyc, written under a temporary name
and renamed; a restore touches the file (cacheprune removes the least recently used).
LAYERBUILD_BYTECODE_CACHE=off compiles everything afresh.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from .cache import cache_root

SETTINGS = "unchecked-hash|PYTHONHASHSEED=0|optimize=0"
SWITCH_ENV = "LAYERBUILD_BYTECODE_CACHE"  # "off" compiles everything afresh


def enabled(environ=os.environ) -> bool:
    return environ.get(SWITCH_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def store_root() -> Path:
    return cache_root().parent / "bytecode"


@lru_cache(maxsize=16)
def interpreter_identity(executable: str, cache_tag: str) -> str:
    real = os.path.realpath(executable)
    try:
        info = os.stat(real)
    except OSError:
        return ""
    return f"{real}|{info.st_size}|{info.st_mtime_ns}|{cache_tag}|{SETTINGS}"


def key_for(identity: str, recorded_path: str, source: bytes) -> str:
    """Pure: the cache key of one module's bytecode."""
    h = hashlib.sha256()
    for part in (identity.encode(), recorded_path.encode("utf-8", "surrogateescape"), source):
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def pyc_path(source: Path, cache_tag: str) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"


def _entry(key: str, root: Path) -> Path:
    return root / key[:2] / f"{key}.pyc"


def restore(sources: list[Path], site: Path, identity: str, cache_tag: str, recorded_root: str,
            root: Path | None = None) -> tuple[list[Path], dict[Path, str]]:  # fmt: skip
    """Put cached .pyc files in place; returns (sources still to compile, {source: key} for storing later).

    Entries are copied, never linked (a layer tree and the cache share no inode), and each carries
    the sha256 of its bytes: a damaged entry is removed and its module compiled again.
    """
    root = root or store_root()
    missing, keys = [], {}
    for source in sources:
        rel = source.relative_to(site).as_posix()
        try:
            key = key_for(identity, f"{recorded_root}/{rel}", source.read_bytes())
        except OSError:
            missing.append(source)
            continue
        keys[source] = key
        data = _read_entry(_entry(key, root))
        if data is None:
            missing.append(source)
            continue
        target = pyc_path(source, cache_tag)
        try:
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
        except OSError:
            missing.append(source)
    return missing, {s: k for s, k in keys.items() if s in set(missing)}


def _read_entry(path: Path) -> bytes | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    data, digest = blob[:-32], blob[-32:]
    if len(blob) < 48 or hashlib.sha256(data).digest() != digest:
        path.unlink(missing_ok=True)  # damaged: compile again, and store a good copy
        return None
    try:
        os.utime(path)  # last use, for pruning
    except OSError:
        pass
    return data


def store(keys: dict[Path, str], cache_tag: str, root: Path | None = None) -> int:
    """Keep the freshly compiled .pyc of each source; a failure to cache never fails the build."""
    root = root or store_root()
    stored = 0
    for source, key in keys.items():
        try:
            data = pyc_path(source, cache_tag).read_bytes()
        except OSError:
            continue  # did not compile: nothing to keep
        final = _entry(key, root)
        temp = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".part", dir=root)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data + hashlib.sha256(data).digest())
            os.chmod(temp, 0o644)
            os.replace(temp, final)
            stored += 1
        except OSError:
            if temp:
                Path(temp).unlink(missing_ok=True)
    return stored
