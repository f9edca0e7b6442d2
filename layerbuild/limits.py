"""Size caps for the files layerbuild parses, checked before a byte is parsed.

A recipe is a hand-written YAML of a few hundred bytes; 1 MiB is a thousand times any real one and parses in
well under a second (a 200 MB recipe took 73 s and 416 MB). A lock holds one line per pin plus one hash per
file of the pinned release: a large recipe (a hundred pins, each with ~60 wheels of ~85 characters) stays
under 1 MiB, so 4 MiB leaves room. A manifest lists packages, notes and audit warnings: tens of KiB; 4 MiB
likewise. The read itself is bounded too (cap + 1 bytes), so a file that grows while read, or a FIFO or
device named as a file, cannot take the process's memory.
"""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1 << 20

# Lambda: function plus all layers, unzipped ("Unzipped size must be smaller than 262144000 bytes").
UNZIPPED_LIMIT = 262_144_000
# Direct upload (Content.ZipFile) quota; larger zips go through S3.
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024

RECIPE_MAX_BYTES = 1 * MiB
LOCK_MAX_BYTES = 4 * MiB
MANIFEST_MAX_BYTES = 4 * MiB
INDEX_PAGE_MAX_BYTES = 64 * MiB  # a local index's project page (PyPI's largest HTML pages are a few MiB)


def too_large_message(path: Path | str, what: str, size: int, cap: int) -> str:
    """Pure: the one line for a file over its cap."""
    return (f"{path}: the {what} is {size:,} bytes, over the {cap:,}-byte cap ({cap // MiB} MiB) for {what}s; "
            f"nothing was read")  # fmt: skip


def not_utf8_message(path: Path | str, what: str, exc: UnicodeDecodeError) -> str:
    """Pure: the one line for a file that is not UTF-8 text."""
    return (f"{path}: the {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start:,}); "
            f"save it as UTF-8")  # fmt: skip


def read_capped_bytes(path: Path | str, cap: int, what: str, error: type[Exception]) -> bytes:
    """The file's bytes, refusing (error(one line)) a file over cap bytes before reading it.

    OSError is left to the caller, which knows how to word it."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > cap:
            raise error(too_large_message(path, what, size, cap))
        data = handle.read(cap + 1)
    if len(data) > cap:  # grew while read, or not a regular file
        raise error(too_large_message(path, what, len(data), cap))
    return data


def read_capped_text(path: Path | str, cap: int, what: str, error: type[Exception]) -> str:
    """The file as UTF-8 text (strict), refusing an oversized or non-UTF-8 file with one line naming it."""
    data = read_capped_bytes(path, cap, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(not_utf8_message(path, what, exc)) from None
