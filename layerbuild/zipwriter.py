"""A minimal deterministic zip writer that deflates entries on several cores.

zipfile compresses one entry at a time on one core; for a numpy-sized layer that is most of a
build. zlib releases the GIL while it deflates, so entries are compressed on a thread pool and
written in their sorted order: the bytes are identical whatever the number of threads.
Only what layers need: no ZIP64 (callers fall back to zipfile past 65,535 entries or 4 GiB), no
encryption, no data descriptors.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# DOS date and time of 1980-01-01 00:00:00, the earliest a zip can hold.
DOS_TIME, DOS_DATE = 0, (0 << 9) | (1 << 5) | 1
VERSION = 20  # 2.0: deflate
MADE_BY_UNIX = (3 << 8) | VERSION
UTF8_FLAG = 0x800
MAX_ENTRIES = 0xFFFF - 1
MAX_BYTES = 0xFFFFFFFF - 1


class NeedsZip64(Exception):
    """Too many entries or too many bytes for a plain zip."""


@dataclass(frozen=True)
class Entry:
    name: str  # posix path; directories end with '/'
    external_attr: int
    source: str | None  # file to read, None for a directory


def _deflate(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _prepare(entry: Entry, level: int) -> tuple[bytes, int, int, int, int]:
    """(payload, method, crc, compressed size, uncompressed size) for one entry."""
    if entry.source is None:
        return b"", 0, 0, 0, 0
    with open(entry.source, "rb") as handle:
        data = handle.read()
    deflated = _deflate(data, level)
    if len(deflated) >= len(data):  # incompressible (already-compressed data, tiny files): store
        return data, 0, zlib.crc32(data), len(data), len(data)
    return deflated, 8, zlib.crc32(data), len(deflated), len(data)


def write_zip(dest: str, entries: list[Entry], level: int = 6, threads: int | None = None) -> int:
    """Write entries (already in their final order) to dest; returns the uncompressed byte total."""
    if len(entries) > MAX_ENTRIES:
        raise NeedsZip64(f"{len(entries)} entries")
    threads = threads or min(8, os.cpu_count() or 1)
    central = []
    offset = 0
    total = 0
    with open(dest, "wb") as out, ThreadPoolExecutor(max_workers=threads) as pool:
        for entry, (payload, method, crc, csize, usize) in zip(entries, pool.map(lambda e: _prepare(e, level), entries)):
            name = entry.name.encode("utf-8")
            flags = UTF8_FLAG if not entry.name.isascii() else 0
            if offset > MAX_BYTES or csize > MAX_BYTES or usize > MAX_BYTES:
                raise NeedsZip64("more than 4 GiB")
            header = struct.pack("<IHHHHHIIIHH", 0x04034B50, VERSION, flags, method, DOS_TIME, DOS_DATE,
                                 crc, csize, usize, len(name), 0)  # fmt: skip
            out.write(header + name)
            out.write(payload)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, MADE_BY_UNIX, VERSION, flags, method,
                                       DOS_TIME, DOS_DATE, crc, csize, usize, len(name), 0, 0, 0, 0,
                                       entry.external_attr, offset) + name)  # fmt: skip
            offset += len(header) + len(name) + csize
            total += usize
        directory = b"".join(central)
        if offset > MAX_BYTES:
            raise NeedsZip64("more than 4 GiB")
        out.write(directory)
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0))
    return total
