"""The build cache inside a target build: compute the key, serve a hit into the output directory."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from layerbuild.cache import builds as cache
from layerbuild.build import contents
from layerbuild.backends.base import BuildRequest
from layerbuild.build.outputs import publish_pair, temp_prefix
from layerbuild.errors import LayerbuildError, NeedsCompilingError
from layerbuild.util.integrity import copy_file
from layerbuild.limits import LOCK_MAX_BYTES, read_capped_text
from layerbuild.model.lockfile import Lock, parse_lock, requirements_digest, unsatisfied
from layerbuild.model.manifest import Manifest, read_manifest


def key_for(request: BuildRequest, backend: str, progress: Callable[[str], None], verify: bool = True) -> str | None:
    """The cache key, resolving a lock first when none is committed; None when the build can't be cached.

    Sets request.lock to the resolved lock so the backend installs exactly what the key covers
    (and does not resolve a second time).
    """
    recipe, target = request.recipe, request.target
    if request.lock is None:
        if backend != "wheels":
            progress("not cached: no committed lock to key the build on (run 'layerbuild lock')")
            return None
        request.lock = remembered_resolution(request, progress)
        if request.lock is None:
            from layerbuild.backends.wheels import backend as wheels  # here: a committed lock's hit never needs the backend

            try:
                request.lock = wheels.resolve_lock(request)
            except NeedsCompilingError:
                return None  # the backend raises it again and the build falls back or fails as before
            remember_resolution(request)
    normalised = recipe.to_dict()
    for per_target in ("python", "architectures"):  # the target itself is keyed; widening the matrix keeps hits
        normalised.pop(per_target, None)
    return cache.cache_key(normalised, target.slug, backend, request.image, request.lock.render(target),
                           contents.toolchain_identity(recipe, target, verify), cache.tool_digest())  # fmt: skip


def publish_hit(key: str, stem: str, zip_path: Path, manifest_path: Path,
                progress: Callable[[str], None]) -> Manifest | None:  # fmt: skip
    """Copy a verified cache entry into the output directory atomically; None on a miss."""
    entry, state = cache.lookup(key)
    if state == "corrupted":
        progress(f"cache entry corrupted (sha256 mismatch): removed {cache.entry_dir(key)}, rebuilding")
    if entry is None:
        return None
    out_dir = zip_path.parent
    tmp_zip = tmp_manifest = None
    try:
        # Fresh pid-tagged names (cleaned up by the next build if we are killed), copied: never a hard
        # link, so nothing done to the cache entry later can reach the zip in dist/ (or the other way).
        token = tempfile.mkdtemp(prefix=temp_prefix(stem), suffix=".tmp", dir=out_dir)
        os.rmdir(token)
        tmp_zip, tmp_manifest = Path(token[:-4] + ".zip.tmp"), Path(token[:-4] + ".json.tmp")
        try:
            copy_file(entry.zip_path, tmp_zip)
            copy_file(entry.manifest_path, tmp_manifest)
        except FileNotFoundError:  # pruned by a concurrent build between lookup and copy: a miss
            return None
        manifest = read_manifest(tmp_manifest)
        if manifest.sha256 != entry.zip_sha256:  # the manifest must describe this very zip
            progress("cache entry inconsistent: rebuilding")
            return None
        for tmp in (tmp_zip, tmp_manifest):
            os.chmod(tmp, 0o644)
        publish_pair(tmp_zip, zip_path, tmp_manifest, manifest_path)
        tmp_zip = tmp_manifest = None
        return manifest
    finally:
        for tmp in (tmp_zip, tmp_manifest):
            if tmp is not None:
                tmp.unlink(missing_ok=True)


# A fresh resolution is remembered for as long as the index's own pages may be cached (PyPI's simple
# pages say max-age=600, which uv honours): within that window uv would answer from its HTTP cache
# with the same pins anyway. LAYERBUILD_RESOLUTION_TTL=0 turns it off; --no-cache skips it.
DEFAULT_RESOLUTION_TTL = 600


def _resolution_ttl() -> float:
    raw = os.environ.get("LAYERBUILD_RESOLUTION_TTL", "").strip()
    if not raw:
        return DEFAULT_RESOLUTION_TTL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise LayerbuildError(f"LAYERBUILD_RESOLUTION_TTL: {raw!r} is not a number of seconds (e.g. 600, or 0 to turn it off)")
    return value


def _resolution_path(request: BuildRequest) -> Path:
    payload = {"requirements": requirements_digest(request.recipe), "target": request.target.slug,
               "index": request.index.index_url, "extra": list(request.index.extra_index_urls),
               "version": cache.__version__}  # fmt: skip
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return cache.cache_root().parent / "resolutions" / f"{key}.json"


def remembered_resolution(request: BuildRequest, progress: Callable[[str], None] = lambda m: None) -> Lock | None:
    """The saved resolution for this request when it is fresh and sound; a damaged one (unreadable, or not
    satisfying the recipe's requirements on the target) is removed, with one line, and never used."""
    ttl = _resolution_ttl()
    if not ttl:
        return None
    path = _resolution_path(request)
    try:
        data = json.loads(read_capped_text(path, LOCK_MAX_BYTES, "saved resolution", ValueError))
        if not 0 <= time.time() - float(data["created"]) <= ttl:
            return None
        lock = parse_lock(data["lock"])
        problem = unsatisfied(lock, request.recipe.requirements, request.target)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # unreadable: resolved again and, if it can be, written again
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem is None:
        return lock
    progress(f"saved resolution {path} is damaged ({problem}): discarded, resolving again")
    path.unlink(missing_ok=True)
    return None


def remember_resolution(request: BuildRequest) -> None:
    if not _resolution_ttl() or request.lock is None:
        return
    path = _resolution_path(request)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".res.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"created": time.time(), "lock": request.lock.render(request.target)}, handle)
        os.replace(name, path)
    except OSError:
        pass  # remembering is an optimisation only
