"""Layer tree layout and deterministic zips.

A layer tree is a directory holding what Lambda extracts into /opt: `python/` (on sys.path), `lib/`
(on LD_LIBRARY_PATH), `bin/` (on PATH). This module prunes the tree (excludes, console scripts
with host shebangs; util/records then keeps each distribution's RECORD consistent), and writes the
zip so that the same tree always gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, NamedTuple

from layerbuild.util.zipwriter import Entry, NeedsZip64, RawSource, write_zip

# Zip timestamps cannot predate 1980; every entry gets this one so rebuilds are byte-identical.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755
# zlib level 6 (zip's default): 2.5x faster than 9 on numpy-sized layers for <1% larger zips (bench/run.py).
COMPRESS_LEVEL = 6


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """Translate a layer glob: `*` and `?` stay within one path part, `**` spans parts.

    A pattern without '/' matches a file or directory name at any depth (as in .gitignore).
    A pattern matching a directory matches everything below it.
    """
    if "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    pattern = pattern.rstrip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "(?:/.*)?$")


def matches_any(relpath: str, patterns) -> bool:
    return any(glob_regex(p).match(relpath) for p in patterns)


class TreeEntry(NamedTuple):
    """One file or directory of a walked tree; the kinds are as Path.is_dir()/is_file() say (symlinks
    followed), read from the directory listing instead of a stat per entry."""

    rel: str  # posix path relative to the walked root
    path: str  # the full path
    is_dir: bool
    is_file: bool
    is_symlink: bool

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]


def walk_tree(root: Path | str) -> list[TreeEntry]:
    """Every file and directory below root, sorted by relative path. Symlinked directories are listed,
    not entered (as os.walk); unreadable directories are skipped.

    A build walks its tree a dozen times (slim, excludes, audit, zip): plain strings and the kinds
    os.scandir already knows, where Path objects and a stat per entry made each walk ~3x slower."""
    top = os.fspath(root)
    cut = len(top) + 1
    found: list[TreeEntry] = []
    pending = [top]
    while pending:
        try:
            listing = os.scandir(pending.pop())
        except OSError:
            continue
        with listing:
            for item in listing:
                is_symlink = _kind(item.is_symlink)
                is_dir = _kind(item.is_dir)
                found.append(TreeEntry(item.path[cut:].replace(os.sep, "/"), item.path, is_dir,
                                       not is_dir and _kind(item.is_file), is_symlink))  # fmt: skip
                if is_dir and not is_symlink:
                    pending.append(item.path)
    found.sort()
    return found


def _kind(test) -> bool:
    try:
        return test()
    except OSError:  # a symlink loop, a vanished entry: neither kind (as Path.is_dir says)
        return False


def remove_paths(layer_root: Path, patterns, keep_prefixes=()) -> list[str]:
    """Delete files matching any pattern (relative to the layer root); return removed file paths."""
    removed = []
    gone: list[str] = []  # directories removed so far: what was below them is gone too
    for entry in walk_tree(layer_root):
        rel = entry.rel
        if any(rel.startswith(g) for g in gone) or rel.startswith(tuple(keep_prefixes)) or not matches_any(rel, patterns):
            continue
        if entry.is_dir and not entry.is_symlink:
            removed.extend(f"{rel}/{e.rel}" for e in walk_tree(entry.path) if not e.is_dir)
            shutil.rmtree(entry.path)
            gone.append(rel + "/")
        else:
            removed.append(rel)
            os.unlink(entry.path)
    prune_empty_dirs(layer_root)
    return removed


def prune_empty_dirs(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()


@dataclass(frozen=True)
class ZipInfoSummary:
    path: Path
    sha256: str
    code_sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    file_count: int


def write_deterministic_zip(layer_root: Path, dest: Path, raw_sources: Mapping[str, RawSource] | None = None) -> ZipInfoSummary:
    """Zip layer_root to dest: sorted entries, fixed timestamps, normalised permissions.

    Symlinks are stored as the files they point to (Lambda's extraction follows them poorly).
    raw_sources (layer path -> wheel member) lets unchanged files reuse their wheel's deflated bytes.
    Writes dest directly; callers write to a temporary name and rename.
    """
    raw_sources = raw_sources or {}
    entries = []
    for entry in walk_tree(layer_root):
        rel = entry.rel
        if entry.is_dir:
            entries.append(Entry(rel + "/", _external_attr(DIR_MODE, True), None))
        else:
            executable = os.stat(entry.path).st_mode & stat.S_IXUSR
            entries.append(Entry(rel, _external_attr(EXEC_MODE if executable else FILE_MODE, False), entry.path,
                                 raw_sources.get(rel)))  # fmt: skip
    hashed = hashlib.sha256()
    try:
        unzipped = write_zip(str(dest), entries, COMPRESS_LEVEL, digest=hashed)
        digest = hashed.digest()
    except NeedsZip64:
        unzipped = _write_with_zipfile(entries, dest)
        digest = file_sha256(dest)
    return ZipInfoSummary(
        path=dest,
        sha256=digest.hex(),
        code_sha256=base64.b64encode(digest).decode("ascii"),
        zipped_bytes=dest.stat().st_size,
        unzipped_bytes=unzipped,
        file_count=sum(1 for e in entries if e.source is not None),
    )


def _external_attr(mode: int, is_dir: bool) -> int:
    attr = ((stat.S_IFDIR if is_dir else stat.S_IFREG) | mode) << 16
    return attr | 0x10 if is_dir else attr  # 0x10: the MS-DOS directory flag


def _write_with_zipfile(entries: list[Entry], dest: Path) -> int:
    """The slow path for layers beyond plain zip limits: zipfile writes ZIP64 when needed."""
    unzipped = 0
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=FIXED_DATE_TIME)
            info.create_system = 3  # unix, so external_attr carries permissions everywhere
            info.external_attr = entry.external_attr
            if entry.source is None:
                archive.writestr(info, b"", compress_type=zipfile.ZIP_STORED)
                continue
            data = Path(entry.source).read_bytes()
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
            unzipped += len(data)
    return unzipped


def file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.digest()
