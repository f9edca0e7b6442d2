"""A minimal deterministic zip writer that deflates entries on several cores.

zipfile compresses one entry at a time on one core; for a numpy-sized layer that is most of a
build. zlib releases the GIL while it deflates, so entries are compressed on a thread pool and
written in their sorted order. A large entry (numpy's 25 MB OpenBLAS) would still keep one core
busy alone, so it is cut into fixed-size chunks deflated in parallel, each primed with the 32 KiB
before it and ended with a sync flush, as pigz does: their concatenation is one valid deflate
stream, nearly as small as a single pass. Chunk size is fixed, so the bytes are identical whatever
the number of threads.
Most of a layer is files exactly as some wheel shipped them, and a wheel's members are already
deflated: an entry with a RawSource whose size and CRC-32 match the file on disk gets the wheel's
compressed bytes copied as they are (a file that slimming changed is compressed afresh). The
wheel is pinned by hash, so the layer's bytes still depend only on the build's inputs.
Only what layers need: no ZIP64 (callers fall back to zipfile past 65,535 entries or 4 GiB), no
encryption, no data descriptors.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from layerbuild.util.threadpool import BATCH_BYTES, ThreadPool, in_batches

# DOS date and time of 1980-01-01 00:00:00, the earliest a zip can hold.
DOS_TIME, DOS_DATE = 0, (0 << 9) | (1 << 5) | 1
VERSION = 20  # 2.0: deflate
MADE_BY_UNIX = (3 << 8) | VERSION
UTF8_FLAG = 0x800
LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, sizes, name/extra lengths
LOCAL_SIGNATURE = 0x04034B50
MAX_ENTRIES = 0xFFFF - 1
MAX_BYTES = 0xFFFFFFFF - 1
CHUNK = 1 << 20  # entries larger than this are deflated in chunks of this size, in parallel
WINDOW = 1 << 15  # deflate's history window: how much of the previous chunk primes the next


class NeedsZip64(Exception):
    """Too many entries or too many bytes for a plain zip."""


@dataclass(frozen=True)
class RawSource:
    """A deflated member of another zip (a wheel) holding the same bytes as an entry's file."""

    archive: str  # path of the zip that holds it
    header_offset: int  # of its local file header
    compress_size: int
    crc: int
    file_size: int
    payload: bytes | None = None  # the deflated bytes themselves, when held in memory (archive unused)


@dataclass(frozen=True)
class Entry:
    name: str  # posix path; directories end with '/'
    external_attr: int
    source: str | None  # file to read, None for a directory
    raw: RawSource | None = None  # already-deflated bytes to copy when the file still matches them


def local_header(method: int, crc: int, csize: int, usize: int, name: bytes = b"", flags: int = 0) -> bytes:
    """A local file header (and the name) as write_zip writes it: fixed 1980 timestamp, no extra field."""
    return LOCAL_HEADER.pack(LOCAL_SIGNATURE, VERSION, flags, method, DOS_TIME, DOS_DATE, crc, csize, usize,
                             len(name), 0) + name  # fmt: skip


def payload_start(buffer, header_offset: int) -> tuple[int, int] | None:
    """(method, offset of the compressed bytes) of the member whose local header is at header_offset
    in buffer (bytes, mmap); None when no local header is there."""
    header = buffer[header_offset:header_offset + LOCAL_HEADER.size]
    if len(header) != LOCAL_HEADER.size:
        return None
    signature, _, _, method, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack(header)
    if signature != LOCAL_SIGNATURE:
        return None
    return method, header_offset + LOCAL_HEADER.size + name_len + extra_len


def deflate_whole(data: bytes, level: int) -> tuple[int, bytes]:
    """(method, payload) exactly as write_zip compresses an entry of at most CHUNK bytes (8: deflated,
    0: stored because deflate did not make it smaller): precomputed payloads must not change the zip."""
    deflated = _deflate(data, level)
    return (0, data) if len(deflated) >= len(data) else (8, deflated)


def _deflate(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@dataclass(frozen=True)
class _Job:
    entry: Entry
    start: int = 0  # byte offset of a chunk; whole-entry jobs start at 0 with size None
    size: int | None = None
    last: bool = True
    file_size: int = 0  # of the whole entry's file (0 for a directory)


@dataclass(frozen=True)
class _Done:
    payload: bytes
    method: int = 8
    crc: int = 0  # whole-entry jobs and the first chunk: the CRC of the whole file
    usize: int = 0  # whole-entry jobs: the file's size


def _jobs(entry: Entry) -> list[_Job]:
    if entry.source is None:
        return [_Job(entry)]
    size = os.stat(entry.source).st_size
    if size <= CHUNK or (entry.raw is not None and entry.raw.file_size == size):
        return [_Job(entry, file_size=size)]
    starts = range(0, size, CHUNK)
    return [_Job(entry, start, min(CHUNK, size - start), start + CHUNK >= size, size) for start in starts]


def _run(job: _Job, level: int, archives: _Archives) -> _Done:
    entry = job.entry
    if entry.source is None:
        return _Done(b"", 0)
    with open(entry.source, "rb") as handle:
        if job.size is None:
            data = handle.read()
            crc = zlib.crc32(data)
            if entry.raw is not None and entry.raw.file_size == len(data) and entry.raw.crc == crc:
                copied = _read_raw(entry.raw, archives)
                if copied is not None:
                    return _Done(copied, 8, crc, len(data))
            method, payload = deflate_whole(data, level)  # stored when incompressible (tiny or compressed files)
            return _Done(payload, method, crc, len(data))
        primer = max(0, job.start - WINDOW)
        handle.seek(primer)
        history = handle.read(job.start - primer)
        chunk = handle.read(job.size)
        crc = 0
        if job.start == 0:  # one worker also checksums the whole file (zlib releases the GIL for it too)
            handle.seek(0)
            crc = _file_crc(handle)
    options = {"zdict": history} if history else {}
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, **options)
    payload = compressor.compress(chunk) + compressor.flush(zlib.Z_FINISH if job.last else zlib.Z_SYNC_FLUSH)
    return _Done(payload, 8, crc)


def _read_raw(raw: RawSource, archives: _Archives) -> bytes | None:
    """The member's deflated bytes, or None when the archive is not what the RawSource says."""
    if raw.payload is not None:
        return raw.payload if len(raw.payload) == raw.compress_size else None
    try:
        with archives.opened(raw.archive) as fd:
            found = payload_start(os.pread(fd, LOCAL_HEADER.size, raw.header_offset), 0)
            if found is None or found[0] != 8:
                return None
            payload = os.pread(fd, raw.compress_size, raw.header_offset + found[1])
    except OSError:
        return None
    return payload if len(payload) == raw.compress_size else None


class _Archives:
    """The wheels that entries copy from, each opened once per zip (pread: no shared file position). At most
    KEPT_OPEN stay open (a layer of hundreds of wheels must not run into a low open-file limit, as macOS's
    256); past that, a read opens and closes its own."""

    KEPT_OPEN = 64

    def __init__(self):
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def opened(self, path: str) -> Iterator[int]:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None and len(self._fds) < self.KEPT_OPEN:
                fd = self._fds[path] = os.open(path, os.O_RDONLY)
        if fd is not None:
            yield fd
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            yield fd
        finally:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)


def _batch_size(job: _Job) -> int | None:
    return job.file_size if job.size is None else None  # a chunk of a large file goes alone


def _file_crc(handle) -> int:
    crc = 0
    for block in iter(lambda: handle.read(CHUNK), b""):
        crc = zlib.crc32(block, crc)
    return crc


def _prepared(jobs: list[_Job], results) -> Iterator[tuple[Entry, bytes, int, int, int, int]]:
    """(entry, payload, method, crc, compressed size, uncompressed size) per entry, chunks joined."""
    pending: list[_Done] = []
    for job, done in zip(jobs, results):
        if job.size is None:
            yield job.entry, done.payload, done.method, done.crc, len(done.payload), done.usize
            continue
        pending.append(done)
        if not job.last:
            continue
        payload = b"".join(d.payload for d in pending)
        crc, usize = pending[0].crc, job.start + job.size
        pending = []
        if len(payload) >= usize:  # incompressible after all: store (rare for a file this large)
            with open(job.entry.source, "rb") as handle:
                data = handle.read()
            yield job.entry, data, 0, crc, len(data), len(data)
        else:
            yield job.entry, payload, 8, crc, len(payload), usize


class _Hashing:
    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.handle.write(data)


def write_zip(dest: str, entries: list[Entry], level: int = 6, threads: int | None = None, digest=None) -> int:
    """Write entries (already in their final order) to dest; returns the uncompressed byte total.

    digest (a hashlib object), if given, is fed every byte written: the zip's hash without reading it again."""
    if len(entries) > MAX_ENTRIES:
        raise NeedsZip64(f"{len(entries)} entries")
    threads = threads or min(8, os.cpu_count() or 1)
    central = []
    offset = 0
    total = 0
    jobs = [job for entry in entries for job in _jobs(entry)]
    archives = _Archives()
    try:
        with open(dest, "wb") as handle, ThreadPool(max_workers=threads) as pool:
            out = _Hashing(handle, digest) if digest is not None else handle
            done = (d for batch in pool.map(lambda b: [_run(j, level, archives) for j in b], in_batches(jobs, _batch_size, BATCH_BYTES)) for d in batch)
            for entry, payload, method, crc, csize, usize in _prepared(jobs, done):
                name = entry.name.encode("utf-8")
                flags = UTF8_FLAG if not entry.name.isascii() else 0
                if offset > MAX_BYTES or csize > MAX_BYTES or usize > MAX_BYTES:
                    raise NeedsZip64("more than 4 GiB")
                header = local_header(method, crc, csize, usize, name, flags)
                out.write(header)
                out.write(payload)
                central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, MADE_BY_UNIX, VERSION, flags, method,
                                           DOS_TIME, DOS_DATE, crc, csize, usize, len(name), 0, 0, 0, 0,
                                           entry.external_attr, offset) + name)  # fmt: skip
                offset += len(header) + csize
                total += usize
            directory = b"".join(central)
            if offset > MAX_BYTES:
                raise NeedsZip64("more than 4 GiB")
            out.write(directory)
            out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0))
    finally:
        archives.close()
    return total
