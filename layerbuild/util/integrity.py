"""Trust nothing that comes back from disk: stored artifacts against their hashes, layer zips against
their CRCs and their manifest, and output files that share no inode with the cache.

- discarded(): the one stderr line said when a stored artifact fails its hash and is fetched or built again.
- copy_file(): dist/ zips are copies of cache entries (a reflink where the filesystem shares extents),
  never hard links: damage to one can never reach the other.
- check_crcs(): every member inflated and checked (audit.integrity and publish.vet build on it).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
import zipfile
from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.util.tree import file_sha256

_BLOCK = 1 << 20
_print_lock = threading.Lock()


class IntegrityError(LayerbuildError):
    """A layer zip is damaged (a member fails its CRC) or no longer matches its manifest's sha256."""


def file_sha256_hex(path: Path) -> str:
    """The file's sha256 (hex), read in blocks."""
    return file_sha256(path).hex()


def discarded(path: Path, why: str, then: str) -> None:
    """One line on stderr: which stored file was thrown away, why, and what happens instead."""
    line = f"warning: {path}: {why}: discarded, {then}\n"
    with _print_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr never fails a build


# Errors copy_file_range gives where the kernel or filesystem cannot do it: fall back to a plain copy.
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM, errno.ETXTBSY}


def copy_file(source: Path, dest: Path) -> None:
    """Copy source to dest, a fresh name (never an existing file or a link planted there), as a new
    inode: copy_file_range shares extents where the filesystem can (btrfs, XFS: a reflink, nearly
    free) and copies in the kernel elsewhere; a plain copy when the call is not available."""
    with open(source, "rb") as src, open(dest, "xb") as dst:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < size:
                    done = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
                    if done == 0:
                        break
                    copied += done
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                copied = 0
        if copied < size or os.fstat(src.fileno()).st_size != size:
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, _BLOCK)


def check_crcs(zip_path: Path) -> None:
    """Inflate every member (call it on a zip safezip vetted: sizes and ratios are capped) and check its
    CRC-32; IntegrityError naming the first member that fails."""
    from layerbuild.util.safezip import CORRUPT_DATA_ERRORS

    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                try:
                    with archive.open(info) as member:
                        while member.read(_BLOCK):
                            pass
                except CORRUPT_DATA_ERRORS as exc:
                    raise IntegrityError(f"{zip_path}: entry {info.filename!r} fails its CRC-32 check or does not "
                                         f"inflate ({' '.join(str(exc).split())}): the zip is damaged; rebuild it") from None  # fmt: skip
    except zipfile.BadZipFile as exc:
        raise IntegrityError(f"{zip_path}: corrupt archive: {exc}") from None
    except OSError as exc:
        raise IntegrityError(f"{zip_path}: cannot read: {exc.strerror or exc}") from None
