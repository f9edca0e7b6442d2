"""Content-addressed build cache: an unchanged target is copied from the cache, not rebuilt.

Key: sha256 over the normalised recipe (Recipe.to_dict()), the lock text, the target, the backend,
the image, the local tools that change the layer's bytes (bytecode compiler, strip) and
layerbuild's version and code (a digest of its sources, so a checkout that changed never serves
layers made by the code before).

The lock: a committed lock makes the key complete without resolving anything. Without one, the
build resolves first (uv, ~0.3 s with its cache warm) and keys on the *resolved* lock, so a new
release of a dependency is a cache miss, never a stale layer; only install, slimming, bytecode and
zipping are skipped. (A TTL keyed without the lock was rejected: it would serve outdated layers.)

Entries live in $XDG_CACHE_HOME/layerbuild/builds/KEY[:2]/KEY/ (~/.cache/... without XDG; bounded
by cacheprune, least recently used first):
layer.zip, manifest.json and entry.json recording both files' sha256. A hit verifies both hashes;
a corrupted entry is removed and the target rebuilt. Zips are copied in and out (a reflink where the
filesystem can), never hard-linked: a dist/ zip and a cache entry never share an inode. Entries are written into a temporary
directory and renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from layerbuild import __version__
from layerbuild.util import safetext
from layerbuild.util.integrity import copy_file
from layerbuild.util.tree import file_sha256

KEY_VERSION = 1
ZIP_NAME = "layer.zip"
MANIFEST_NAME = "manifest.json"
ENTRY_NAME = "entry.json"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layerbuild" / "builds"


@lru_cache(maxsize=1)
def tool_digest() -> str:
    """sha256 over layerbuild's own code and data. The version number alone would let a checkout that
    changed how layers are made (slimming rules, the zip writer, the manifest) serve layers made before."""
    package = Path(__file__).resolve().parents[1]  # layerbuild/
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".txt") and "__pycache__" not in p.parts):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(recipe: dict, target: str, backend: str, image: str | None, lock_text: str, toolchain: dict,
              tool: str = "") -> str:  # fmt: skip
    """Pure: the same inputs always give the same key; any change gives another. `tool` is tool_digest()."""
    payload = {
        "key_version": KEY_VERSION,
        "layerbuild": __version__,
        "layerbuild_code": tool,
        "recipe": recipe,
        "target": target,
        "backend": backend,
        "image": image,
        "lock": lock_text,
        "toolchain": toolchain,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    directory: Path
    zip_sha256: str = ""  # as recorded when stored (and verified on lookup)

    @property
    def zip_path(self) -> Path:
        return self.directory / ZIP_NAME

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME


def entry_dir(key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / key[:2] / key


def lookup(key: str, root: Path | None = None) -> tuple[CacheEntry | None, str]:
    """(entry, "hit") when present and intact; (None, "miss") or (None, "corrupted": entry removed)."""
    directory = entry_dir(key, root)
    if not directory.is_dir():
        return None, "miss"
    entry = CacheEntry(key, directory)
    try:
        recorded = safetext.read_json(directory / ENTRY_NAME, max_bytes=1 << 20)
        entry = CacheEntry(key, directory, recorded["zip_sha256"])
        intact = (file_sha256(entry.zip_path).hex() == recorded["zip_sha256"]
                  and file_sha256(entry.manifest_path).hex() == recorded["manifest_sha256"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        shutil.rmtree(directory, ignore_errors=True)
        return None, "corrupted"
    try:
        os.utime(directory / ENTRY_NAME)  # last use: pruning by size removes the least recently used first
    except OSError:
        pass
    return entry, "hit"


def store(key: str, zip_path: Path, manifest_path: Path, root: Path | None = None) -> CacheEntry | None:
    """Copy a published zip + manifest into the cache; a failure to cache never fails the build."""
    directory = entry_dir(key, root)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        # The pid lets a later prune tell a killed store's leftovers from a concurrent one in progress.
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.{os.getpid()}.", suffix=".tmp", dir=directory.parent))
        try:
            copy_file(zip_path, staging / ZIP_NAME)  # never a link: dist/ and the cache share no inode
            shutil.copyfile(manifest_path, staging / MANIFEST_NAME)
            recorded = {"zip_sha256": file_sha256(staging / ZIP_NAME).hex(),
                        "manifest_sha256": file_sha256(staging / MANIFEST_NAME).hex()}  # fmt: skip
            (staging / ENTRY_NAME).write_text(json.dumps(recorded, sort_keys=True) + "\n", encoding="utf-8")
            if directory.exists():  # a corrupted leftover or a concurrent writer's entry
                shutil.rmtree(directory, ignore_errors=True)
            os.rename(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        return None
    return CacheEntry(key, directory, recorded["zip_sha256"])


def link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link source to dest (a fresh name) when on the same filesystem, else copy.

    Only for private copies in a build's scratch tree (a stored wheel kept from a concurrent prune).
    Never for what reaches dist/ or the build cache: a link would let damage to one reach the other
    (integrity.copy_file copies, reflinking where the filesystem can).
    """
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
