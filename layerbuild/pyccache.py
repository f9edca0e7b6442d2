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
import zlib
from functools import lru_cache
from pathlib import Path

from .cache import cache_root
from .cacheprune import bytecode_root
from .layout import COMPRESS_LEVEL
from .zipwriter import CHUNK, LOCAL_HEADER, RawSource, deflate_whole, local_header, payload_start

SETTINGS = "unchecked-hash|PYTHONHASHSEED=0|optimize=0"
SWITCH_ENV = "LAYERBUILD_BYTECODE_CACHE"  # "off" compiles everything afresh


def enabled(environ=os.environ) -> bool:
    return environ.get(SWITCH_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def store_root() -> Path:
    return bytecode_root(cache_root())


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


# An entry: a zip local file header (method, CRC-32, sizes), the .pyc as the layer zip would store it
# (deflated exactly as zipwriter would, or stored), then the sha256 of all that.


def _encode(data: bytes) -> tuple[bytes, RawSource | None]:
    """The entry's bytes, and the RawSource of its deflated form (None when stored)."""
    method, payload = deflate_whole(data, COMPRESS_LEVEL) if len(data) <= CHUNK else (0, data)
    crc = zlib.crc32(data)
    body = local_header(method, crc, len(payload), len(data)) + payload
    raw = RawSource("", 0, len(payload), crc, len(data), payload) if method == 8 else None
    return body + hashlib.sha256(body).digest(), raw


def _decode(blob: bytes) -> tuple[bytes, RawSource | None] | None:
    """(pyc bytes, RawSource of its deflated form or None), or None for a damaged entry."""
    body, digest = blob[:-32], blob[-32:]
    if len(body) < LOCAL_HEADER.size or hashlib.sha256(body).digest() != digest:
        return None
    found = payload_start(body, 0)
    _, _, _, _, _, _, crc, csize, usize, _, _ = LOCAL_HEADER.unpack_from(body)
    if found is None or found[0] not in (0, 8) or len(body) - found[1] != csize:
        return None
    method, payload = found[0], body[found[1]:]
    try:
        data = zlib.decompress(payload, -15, max(1, usize)) if method == 8 else payload
    except zlib.error:
        return None
    if len(data) != usize or zlib.crc32(data) != crc:
        return None
    raw = RawSource("", 0, csize, crc, usize, payload) if method == 8 else None
    return data, raw


def restore(sources: list[Path], site: Path, identity: str, cache_tag: str, recorded_root: str,
            root: Path | None = None) -> tuple[list[Path], dict[Path, str], dict[Path, RawSource]]:  # fmt: skip
    """Put cached .pyc files in place.

    Returns (sources still to compile, {source: key} for storing them later, {pyc path: RawSource}:
    the deflated form the zip writer can copy). Entries are copied, never linked (a layer tree and
    the cache share no inode), and checked: a damaged entry is removed and its module compiled again.
    """
    root = root or store_root()
    missing, keys, raws = [], {}, {}
    for source in sources:
        rel = source.relative_to(site).as_posix()
        try:
            key = key_for(identity, f"{recorded_root}/{rel}", source.read_bytes())
        except OSError:
            missing.append(source)
            continue
        found = _read_entry(_entry(key, root))
        if found is None:
            keys[source] = key
            missing.append(source)
            continue
        data, raw = found
        target = pyc_path(source, cache_tag)
        try:
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
        except OSError:
            keys[source] = key
            missing.append(source)
            continue
        if raw is not None:
            raws[target] = raw
    return missing, keys, raws


def _read_entry(path: Path) -> tuple[bytes, RawSource | None] | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    found = _decode(blob)
    if found is None:
        path.unlink(missing_ok=True)  # damaged: compile again, and store a good copy
        return None
    try:
        os.utime(path)  # last use, for pruning
    except OSError:
        pass
    return found


def store_one(source: Path, key: str, cache_tag: str, root: Path | None = None) -> tuple[Path, RawSource | None] | None:
    """Keep the freshly compiled .pyc of one source (a failure to cache never fails the build).

    Returns (pyc path, its RawSource or None when stored uncompressed), or None when the source did
    not compile: the deflate done here for the cache is the zip writer's too. Thread-safe.
    """
    root = root or store_root()
    compiled = pyc_path(source, cache_tag)
    try:
        data = compiled.read_bytes()
    except OSError:
        return None  # did not compile: nothing to keep
    blob, raw = _encode(data)
    final = _entry(key, root)
    temp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".part", dir=root)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.chmod(temp, 0o644)
        os.replace(temp, final)
    except OSError:
        if temp:
            Path(temp).unlink(missing_ok=True)
    return compiled, raw

