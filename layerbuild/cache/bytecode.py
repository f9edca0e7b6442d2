"""Compiled bytecode, kept across builds: a module compiled once is not compiled again.

Compiling is most of a cold build's CPU (numpy + Pillow: ~2 CPU-seconds), and a recipe change
usually leaves most packages as they were. A .pyc's bytes depend only on the source bytes, the
path recorded in it (co_filename, /opt/python/...), the interpreter that wrote it and the fixed
settings layerbuild compiles with (unchecked-hash, PYTHONHASHSEED=0, no optimisation): the key
covers all of them, with the interpreter identified by its resolved path, size and mtime (an
upgraded interpreter is a new identity).

Entries live in packs, $XDG_CACHE_HOME/layerbuild/bytecode/NAME.pack, one per build that compiled
anything, written under a temporary name and renamed; a restore touches the packs it used
(cacheprune removes the least recently used). Every entry carries its sha256 and is checked on use, as is
each pack's index: a damaged pack is removed, one line on stderr names it, and its modules are compiled again.
LAYERBUILD_BYTECODE_CACHE=off compiles everything afresh.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
import zlib
from functools import lru_cache
from pathlib import Path

from layerbuild.cache.builds import cache_root
from layerbuild.cache.prune import PACK_SUFFIX, bytecode_root
from layerbuild.util import integrity
from layerbuild.util.tree import COMPRESS_LEVEL
from layerbuild.util.zipwriter import (
    CHUNK,
    LOCAL_HEADER,
    RawSource,
    deflate_whole,
    local_header,
    payload_start,
)

SETTINGS = "unchecked-hash|PYTHONHASHSEED=0|optimize=0|seeded"  # "seeded": packs from before the seed reached 3.8-3.10
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
    the cache share no inode), and checked: a damaged entry is not used, its pack is removed (its
    good entries are stored again by this build) and the module compiled again.
    """
    root = root or store_root()
    missing, keys, raws = [], {}, {}
    with _PackReader(root) as reader:
        for source in sources:
            rel = source.relative_to(site).as_posix()
            try:
                key = key_for(identity, f"{recorded_root}/{rel}", source.read_bytes())
            except OSError:
                missing.append(source)
                continue
            found = reader.get(key)
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


# A pack: MAGIC, entries (as _encode makes them), the index (a row per entry: the key's 32 bytes,
# offset, length, sorted by key), then the trailer (index offset, row count, sha256 of the index,
# MAGIC). A build writes one pack for everything it compiled: one file, not one per module (file
# creation is most of what storing cost: 0.4 s of a 2.5 s numpy + Pillow build on a VM's disk).
MAGIC = b"LBPYCPK1"
_ROW = struct.Struct("<32sQI")
_TRAILER = struct.Struct("<QI32s8s")


def pack_paths(root: Path) -> list[Path]:
    """The finished packs below root, newest first (a staging file starts with '.')."""
    try:
        found = [p for p in root.glob(f"*{PACK_SUFFIX}") if not p.name.startswith(".")]
        return sorted(found, key=lambda p: (-p.stat().st_mtime, p.name))
    except OSError:
        return []


def read_index(handle) -> dict[bytes, tuple[int, int]] | None:
    """{key: (offset, length)} of an open pack, or None when it is damaged or not a pack."""
    try:
        size = os.fstat(handle.fileno()).st_size
        if size < len(MAGIC) + _TRAILER.size:
            return None
        trailer = os.pread(handle.fileno(), _TRAILER.size, size - _TRAILER.size)
        offset, count, digest, magic = _TRAILER.unpack(trailer)
        if magic != MAGIC or offset + count * _ROW.size != size - _TRAILER.size:
            return None
        index = os.pread(handle.fileno(), count * _ROW.size, offset)
    except (OSError, struct.error):
        return None
    if hashlib.sha256(index).digest() != digest:
        return None
    rows = {}
    for key, start, length in _ROW.iter_unpack(index):
        if start < len(MAGIC) or start + length > offset:
            return None
        rows[key] = (start, length)
    return rows


def module_count(path: Path) -> int:
    """How many modules a pack holds (0 when it is damaged)."""
    try:
        with open(path, "rb") as handle:
            return len(read_index(handle) or {})
    except OSError:
        return 0


def _discard(path: Path, why: str) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    integrity.discarded(path, why, "its modules are compiled again")


class _PackReader:
    """Every pack's index, read once; entries read and checked on demand."""

    def __init__(self, root: Path):
        self._handles: list = []
        self._where: dict[bytes, tuple[int, int, int]] = {}  # key -> (handle number, offset, length)
        self._paths: list[Path] = []
        self._touched: set[int] = set()
        self._discarded: set[int] = set()
        for path in pack_paths(root):
            try:
                handle = open(path, "rb")
            except OSError:
                continue  # pruned meanwhile
            rows = read_index(handle)
            if rows is None:
                handle.close()
                _discard(path, "bytecode pack damaged (its index fails its sha256)")  # its modules are compiled again
                continue
            number = len(self._handles)
            self._handles.append(handle)
            self._paths.append(path)
            for key, (start, length) in rows.items():
                self._where.setdefault(key, (number, start, length))  # the newest pack wins

    def get(self, key: str) -> tuple[bytes, RawSource | None] | None:
        found = self._where.get(bytes.fromhex(key))
        if found is None:
            return None
        number, start, length = found
        try:
            blob = os.pread(self._handles[number].fileno(), length, start)
        except OSError:
            return None
        decoded = _decode(blob) if len(blob) == length else None
        if decoded is None:
            if number not in self._discarded:  # this build stores its modules again
                self._discarded.add(number)
                _discard(self._paths[number], "a bytecode pack entry fails its sha256")
            return None
        if number not in self._touched:
            self._touched.add(number)
            try:
                os.utime(self._paths[number])  # last use, for pruning
            except OSError:
                pass
        return decoded

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.close()


class PackWriter:
    """Collects this build's freshly compiled modules into one pack (a failure to cache never fails a build).

    add() is thread-safe (each compiler's output is read on its own thread); finish() publishes
    the pack under a name derived from its index, abandon() drops it. Use it as a context manager:
    an exception abandons.
    """

    def __init__(self, cache_tag: str, root: Path | None = None):
        self.cache_tag = cache_tag
        self.root = root or store_root()
        self._lock = threading.Lock()
        self._handle = None
        self._temp: str | None = None
        self._rows: list[tuple[bytes, int, int]] = []
        self._offset = len(MAGIC)
        self._broken = False

    def add(self, source: Path, key: str) -> tuple[Path, RawSource | None] | None:
        """Keep source's fresh .pyc; returns (pyc path, its RawSource or None when stored uncompressed),
        or None when the source did not compile. The deflate done here for the cache is the zip writer's too."""
        compiled = pyc_path(source, self.cache_tag)
        try:
            data = compiled.read_bytes()
        except OSError:
            return None  # did not compile: nothing to keep
        blob, raw = _encode(data)
        with self._lock:
            if not self._broken:
                try:
                    if self._handle is None:
                        self.root.mkdir(parents=True, exist_ok=True)
                        fd, self._temp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".part", dir=self.root)
                        self._handle = os.fdopen(fd, "wb")
                        self._handle.write(MAGIC)
                    self._handle.write(blob)
                    self._rows.append((bytes.fromhex(key), self._offset, len(blob)))
                    self._offset += len(blob)
                except OSError:
                    self._broken = True
        return compiled, raw

    def finish(self) -> Path | None:
        with self._lock:
            if self._handle is None or self._broken or not self._rows:
                self.abandon()
                return None
            index = b"".join(_ROW.pack(*row) for row in sorted(self._rows))
            digest = hashlib.sha256(index).digest()
            try:
                self._handle.write(index + _TRAILER.pack(self._offset, len(self._rows), digest, MAGIC))
                self._handle.close()
                os.chmod(self._temp, 0o644)
                final = self.root / f"{digest.hex()[:32]}{PACK_SUFFIX}"
                os.replace(self._temp, final)
            except OSError:
                self.abandon()
                return None
            self._handle = self._temp = None
            return final

    def abandon(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None
        if self._temp:
            Path(self._temp).unlink(missing_ok=True)
            self._temp = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.abandon()
