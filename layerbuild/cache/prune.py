"""Keeping the build cache bounded: what it holds, and removing the least recently used entries.

Four kinds of entries share one budget: built layers (builds/), the downloaded wheels the wheels
backend installs from (wheels/, see wheelstore), compiled modules (bytecode/, see pyccache) and the
Lambda runtimes' own packages that verification, test and invoke put after the layers (runtime-sdk/). A
hit touches its entry (entry.json's, the wheel's or the .pyc's mtime is the last use), so pruning by
size removes what has gone unused longest. After every store the cache is cut back to
LAYERBUILD_CACHE_MAX_SIZE (default 5 GiB; `off` disables it); `layerbuild cache prune` does the same
on demand, by size, by age or all. Staging directories and partial downloads of processes that
were killed (pid gone) are removed as well.

Symbolic links are never followed, at any level (a store, a shard, an entry, a file in one): layerbuild
makes none there, so a link is not an entry. Pruning removes the link itself and never touches what it
points to; sizes count the cache's own files only.

Selection (select_for_pruning) and parsing (parse_size, parse_age) are pure; the rest touches disk.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.cache import builds as cache
from layerbuild.errors import LayerbuildError
from layerbuild.util import safetext
from layerbuild.util.process import pid_alive

MAX_SIZE_ENV = "LAYERBUILD_CACHE_MAX_SIZE"
DEFAULT_MAX_SIZE = 5 * 1024**3
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STAGING = re.compile(r"^\.[0-9a-f]{12}\.(\d+)\.")
_PARTIAL_DOWNLOAD = re.compile(r"^\.(\d+)\..*\.part$")
_SDK_STAGING = re.compile(r"^\.(\d+)\.python")


class CacheSettingError(LayerbuildError):
    """A cache size or age that cannot be read."""


@dataclass(frozen=True)
class EntryInfo:
    key: str
    directory: Path
    size: int  # bytes of the entry's files
    last_used: float  # epoch seconds: the mtime every hit touches (entry.json, the wheel, the .pyc)
    kind: str = "build"  # or "wheel", "bytecode" (directory is then the .pyc file itself)


@dataclass
class PruneReport:
    removed: list[EntryInfo] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)  # staging directories and partial files of killed processes
    links: list[Path] = field(default_factory=list)  # symbolic links found in the cache: removed, never followed
    kept: int = 0
    kept_bytes: int = 0

    @property
    def freed_bytes(self) -> int:
        return sum(e.size for e in self.removed)

    def to_dict(self) -> dict:
        return {"removed": len(self.removed), "freed_bytes": self.freed_bytes, "leftovers_removed": len(self.leftovers),
                "links_removed": len(self.links), "kept": self.kept, "kept_bytes": self.kept_bytes}  # fmt: skip


def parse_size(text: str, where: str) -> int:
    """'500MB', '2GiB', '1.5g', '0' -> bytes; decimal units are powers of 1000, binary ones of 1024."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise CacheSettingError(f"{where}: {text!r} is not a size; use a number with an optional unit, "
                                f"e.g. 500MB, 2GiB or 0")  # fmt: skip
    return int(float(match.group(1)) * _UNITS[unit])


def parse_age(text: str, where: str) -> float:
    """'30d', '12h', '90m', '2w' -> seconds."""
    match = _AGE.match(str(text))
    if not match:
        raise CacheSettingError(f"{where}: {text!r} is not an age; use a number and a unit s, m, h, d or w, e.g. 30d")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def configured_max_size(environ=os.environ) -> int | None:
    """The automatic cap after each store: None when LAYERBUILD_CACHE_MAX_SIZE is 'off'."""
    value = environ.get(MAX_SIZE_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_SIZE
    if value.lower() in ("off", "none", "unlimited"):
        return None
    return parse_size(value, MAX_SIZE_ENV)


def select_for_pruning(entries: list[EntryInfo], max_size: int | None = None, older_than: float | None = None,
                       now: float | None = None, everything: bool = False) -> list[EntryInfo]:  # fmt: skip
    """Pure: the entries to remove. Everything; or those unused for longer than older_than, then the
    least recently used until the rest fits in max_size (ties broken by key, so the choice is stable)."""
    if everything:
        return sorted(entries, key=lambda e: e.key)
    now = time.time() if now is None else now
    doomed = {e.key for e in entries if older_than is not None and now - e.last_used > older_than}
    if max_size is not None:
        remaining = sum(e.size for e in entries if e.key not in doomed)
        for entry in sorted(entries, key=lambda e: (e.last_used, e.key)):
            if remaining <= max_size:
                break
            if entry.key not in doomed:
                doomed.add(entry.key)
                remaining -= entry.size
    return sorted((e for e in entries if e.key in doomed), key=lambda e: (e.last_used, e.key))


def wheel_root(root: Path) -> Path:
    """The wheel store beside a build cache root (layerbuild/builds -> layerbuild/wheels)."""
    return root.parent / "wheels"


PACK_SUFFIX = ".pack"  # the bytecode store's files (pyccache writes them)


def bytecode_root(root: Path) -> Path:
    return root.parent / "bytecode"


def runtime_sdk_root(root: Path) -> Path:
    """The Lambda runtimes' own packages (runtimesdk.py), installed beside the build cache."""
    return root.parent / "runtime-sdk"


def _real_dir(path: Path) -> bool:
    """A directory that is not a symbolic link (is_dir() alone follows links out of the cache)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _real_file(path: Path) -> os.stat_result | None:
    """The lstat of a regular file that is not a link, else None."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _children(folder: Path) -> list[Path]:
    """folder's entries, sorted; none when folder is a link or gone."""
    if not _real_dir(folder):
        return []
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def stray_links(root: Path | None = None) -> list[Path]:
    """Symbolic links where the cache keeps its stores, shards, entries and their files (layerbuild makes
    none there). Anything deeper is inside an entry: rmtree unlinks it with the entry, never following it."""
    root = root or cache.cache_root()
    # How deep each store's own structure goes: builds/SHARD/KEY/FILE, wheels/SHARD/SHA/FILE,
    # bytecode/PACK or bytecode/SHARD/FILE, runtime-sdk/ENTRY (whose contents are an installation).
    depths = {root: 3, wheel_root(root): 3, bytecode_root(root): 2, runtime_sdk_root(root): 1}
    found = []
    for store, depth in depths.items():
        level = [store]
        for _ in range(depth + 1):
            found += [path for path in level if path.is_symlink()]
            level = [child for path in level for child in _children(path)]
    return found


def list_entries(root: Path | None = None) -> list[EntryInfo]:
    """Build entries, then stored wheels, then cached bytecode, then the runtimes' own packages."""
    root = root or cache.cache_root()
    return (_build_entries(root) + _wheel_entries(wheel_root(root)) + _bytecode_entries(bytecode_root(root))
            + _runtime_sdk_entries(runtime_sdk_root(root)))  # fmt: skip


RUNTIME_SDK_MARKER = "installed.json"  # runtimesdk writes it last, with the install's size; a use touches it


def _runtime_sdk_entries(root: Path) -> list[EntryInfo]:
    found = []
    for directory in _children(root):
        if not _real_dir(directory):
            continue
        marker = directory / RUNTIME_SDK_MARKER
        if _real_file(marker) is None:
            continue  # staging, removed meanwhile, or a link
        try:
            size = int(safetext.read_json(marker, max_bytes=1 << 20).get("bytes", 0))  # type: ignore[union-attr]
            found.append(EntryInfo(directory.name, directory, size, marker.stat().st_mtime, "runtime-sdk"))
        except (OSError, ValueError, AttributeError):
            continue  # staging, or removed meanwhile
    return found


def _shards(root: Path):
    """The two-character shard directories below root."""
    yield from (shard for shard in _children(root) if len(shard.name) == 2 and _real_dir(shard))


def _bytecode_entries(root: Path) -> list[EntryInfo]:
    """Packs of compiled modules (pyccache), and the single-module files of earlier versions (pruned like any entry)."""
    found = []
    candidates = [path for path in _children(root) if path.name.endswith(PACK_SUFFIX)]
    candidates += [path for shard in _shards(root) for path in _children(shard) if path.name.endswith(".pyc")]
    for path in candidates:
        if path.name.startswith("."):
            continue  # staging
        info = _real_file(path)
        if info is None:
            continue  # a link (removed as one) or gone
        found.append(EntryInfo(path.stem, path, info.st_size, info.st_mtime, "bytecode"))
    return found


def _entry_dirs(root: Path):
    """Entry directories below root's two-character shards (staging names, starting with '.', skipped)."""
    for shard in _shards(root):
        for directory in _children(shard):
            if not directory.name.startswith(".") and _real_dir(directory):
                yield directory


def _wheel_entries(root: Path) -> list[EntryInfo]:
    found = []
    for directory in _entry_dirs(root):
        files = [info for f in _children(directory) if (info := _real_file(f)) is not None]
        if files:
            found.append(EntryInfo(directory.name, directory, sum(f.st_size for f in files),
                                   max(f.st_mtime for f in files), "wheel"))  # fmt: skip
    return found


def _build_entries(root: Path) -> list[EntryInfo]:
    found = []
    for directory in _entry_dirs(root):
        size = sum(info.st_size for f in _children(directory) if (info := _real_file(f)) is not None)
        try:
            marker = directory / cache.ENTRY_NAME
            last_used = (_real_file(marker) or directory.lstat()).st_mtime
        except OSError:
            continue  # removed meanwhile by a concurrent prune
        found.append(EntryInfo(directory.name, directory, size, last_used))
    return found


def staging_leftovers(root: Path | None = None) -> list[Path]:
    """Staging directories of stores, and partial downloads, whose process is gone (killed mid-way)."""
    root = root or cache.cache_root()
    found = []
    for store in (wheel_root(root), bytecode_root(root)):
        found += _of_dead_processes(store, ".*.part", _PARTIAL_DOWNLOAD)
    found += _of_dead_processes(runtime_sdk_root(root), ".*", _SDK_STAGING)
    for shard in (p for p in _children(root) if _real_dir(p)):
        found += _of_dead_processes(shard, ".*.tmp", _STAGING)
    return found


def _of_dead_processes(folder: Path, pattern: str, pid_in_name: re.Pattern) -> list[Path]:
    """Paths in folder matching pattern whose name carries the pid of a process that is gone."""
    if not _real_dir(folder):
        return []
    return [path for path in sorted(folder.glob(pattern))
            if (match := pid_in_name.match(path.name)) and not pid_alive(int(match.group(1)))]  # fmt: skip


def prune(root: Path | None = None, max_size: int | None = None, older_than: float | None = None,
          everything: bool = False, now: float | None = None) -> PruneReport:  # fmt: skip
    root = root or cache.cache_root()
    entries = list_entries(root)
    report = PruneReport()
    doomed = select_for_pruning(entries, max_size, older_than, now, everything)
    links = stray_links(root)  # before removing entries: a link inside one is reported as well
    for entry in doomed:
        _remove(entry.directory)
        if not os.path.lexists(entry.directory):
            report.removed.append(entry)
    for path in staging_leftovers(root):
        _remove(path)
        report.leftovers.append(path)
    for link in links:
        _remove(link)
        if not os.path.lexists(link):
            report.links.append(link)
    gone = {e.key for e in report.removed}
    report.kept = sum(1 for e in entries if e.key not in gone)
    report.kept_bytes = sum(e.size for e in entries if e.key not in gone)
    return report


def _remove(path: Path) -> None:
    """A real directory with everything in it (rmtree unlinks the links inside, never following them);
    anything else, a link to a directory included, is unlinked itself."""
    if _real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def prune_after_store(root: Path | None = None) -> PruneReport | None:
    """The automatic cap; a failure here never fails a build (the setting itself is checked earlier)."""
    max_size = configured_max_size()
    if max_size is None:
        return None
    try:
        return prune(root, max_size=max_size)
    except OSError:
        return None
