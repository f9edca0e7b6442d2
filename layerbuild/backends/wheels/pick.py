"""Which file of a locked release to install for a target (pure).

A lock pins a version and lists the hashes of all its files (every platform); the installer picks
the one wheel that suits the target best, as pip and uv do: the first match in the target's tag
priority order (its own ABI before abi3 before pure Python; the newest manylinux glibc the runtime
has first). Ties go to the file name, so the choice is stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from layerbuild.backends.wheels.index import IndexFile
from layerbuild.model.runtimes import Target


@dataclass(frozen=True)
class LockedPin:
    name: str  # canonical
    version: str
    hashes: frozenset[str]  # sha256 hex digests the lock allows


@lru_cache(maxsize=64)
def tag_priority(python: str, platforms: tuple[str, ...]) -> dict[Tag, int]:
    """Tag -> rank (0 is best) for a CPython version on the given platforms (ordered best first)."""
    version = tuple(int(x) for x in python.split("."))
    abi = f"cp{version[0]}{version[1]}"
    ordered = list(cpython_tags(version, abis=[abi], platforms=[*platforms]))
    ordered += list(compatible_tags(version, interpreter=abi, platforms=[*platforms]))
    ranks: dict[Tag, int] = {}
    for rank, tag in enumerate(ordered):
        ranks.setdefault(tag, rank)
    return ranks


def target_priority(target: Target) -> dict[Tag, int]:
    return tag_priority(target.python, tuple(target.runtime.platform_tags(target.arch)))


def tag_runs_on(tag_text: str, target: Target) -> bool:
    """Whether a wheel tag (possibly compressed, cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64) runs
    on the target: the same rule that chooses the file to install, so an installed wheel is judged as it was picked."""
    ranks = target_priority(target)
    return any(tag in ranks for tag in parse_tag(tag_text))


def wheel_rank(filename: str, pin: LockedPin, ranks: dict[Tag, int]) -> int | None:
    """The file's rank for this pin on the target, or None when it is not a wheel of the pin that runs there."""
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    try:
        if canonicalize_name(name) != pin.name or version != Version(pin.version):
            return None
    except InvalidVersion:
        return None
    found = [ranks[t] for t in tags if t in ranks]
    return min(found) if found else None


def choose_wheel(files: list[IndexFile], pin: LockedPin, ranks: dict[Tag, int]) -> IndexFile | None:
    """The best wheel of the pin for the target, or None when the listing has none.

    A file the index lists with a hash outside the lock is only chosen when nothing better is
    listed: it is then downloaded and fails the hash check with a clear message, as a tampered
    mirror should.
    """
    # Pages list every release (numpy: 4,400 files) and parsing a file name costs 10 us: the files
    # whose name spells the version as the pin does are looked at first. A release's files all spell
    # it alike; another spelling of the same version (1.0 for 1.0.0) is found by the full pass.
    marker = f"-{pin.version}-"
    found = _best_wheel([f for f in files if marker in f.filename], pin, ranks)
    if found is None or found[0][0]:  # nothing, or only files listed with other hashes: look at everything
        found = _best_wheel(files, pin, ranks)
    return found[1] if found else None


def _best_wheel(files: list[IndexFile], pin: LockedPin, ranks: dict[Tag, int]) -> tuple[tuple[int, int, str], IndexFile] | None:
    best: tuple[tuple[int, int, str], IndexFile] | None = None
    for item in files:
        rank = wheel_rank(item.filename, pin, ranks)
        if rank is None:
            continue
        listed_elsewhere = 1 if (item.sha256 and item.sha256.lower() not in pin.hashes) else 0
        key = (listed_elsewhere, rank, item.filename)
        if best is None or key < best[0]:
            best = (key, item)
    return best


