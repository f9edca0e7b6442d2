"""The build cache inside a target build: compute the key, serve a hit into the output directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from . import cache, contents
from .backends import wheels
from .backends.base import BuildRequest
from .distlock import publish_pair, temp_prefix
from .errors import NeedsCompilingError
from .manifest import Manifest, read_manifest


def key_for(request: BuildRequest, backend: str, progress: Callable[[str], None]) -> str | None:
    """The cache key, resolving a lock first when none is committed; None when the build can't be cached.

    Sets request.lock to the resolved lock so the backend installs exactly what the key covers
    (and does not resolve a second time).
    """
    recipe, target = request.recipe, request.target
    if request.lock is None:
        if backend != "wheels":
            progress("not cached: no committed lock to key the build on (run 'layerbuild lock')")
            return None
        try:
            request.lock = wheels.resolve_lock(request)
        except NeedsCompilingError:
            return None  # the backend raises it again and the build falls back or fails as before
    normalised = recipe.to_dict()
    for per_target in ("python", "architectures"):  # the target itself is keyed; widening the matrix keeps hits
        normalised.pop(per_target, None)
    return cache.cache_key(normalised, target.slug, backend, request.image, request.lock.render(target),
                           contents.toolchain_identity(recipe, target))  # fmt: skip


def publish_hit(key: str, stem: str, zip_path: Path, manifest_path: Path,
                progress: Callable[[str], None]) -> Manifest | None:  # fmt: skip
    """Copy a verified cache entry into the output directory atomically; None on a miss."""
    entry, state = cache.lookup(key)
    if state == "corrupted":
        progress("cache entry corrupted (sha256 mismatch): removed, rebuilding")
    if entry is None:
        return None
    out_dir = zip_path.parent
    tmp_zip = tmp_manifest = None
    try:
        # Fresh pid-tagged names (cleaned up by the next build if we are killed), linked or copied.
        token = tempfile.mkdtemp(prefix=temp_prefix(stem), suffix=".tmp", dir=out_dir)
        os.rmdir(token)
        tmp_zip, tmp_manifest = Path(token[:-4] + ".zip.tmp"), Path(token[:-4] + ".json.tmp")
        cache.link_or_copy(entry.zip_path, tmp_zip)
        cache.link_or_copy(entry.manifest_path, tmp_manifest)
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
