"""The Docker-free backend: install target-compatible wheels with uv into python/.

Only wheels whose tags run on the target (Python version x architecture x glibc) are taken;
projects that publish no wheel at all are accepted as source distributions only when building
them gives a pure-Python wheel.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import Future
from pathlib import Path

from .. import wheelinstall, wheelstore
from ..cache import link_or_copy
from ..distinfo import installed_packages, wheel_tags
from ..errors import NeedsCompilingError, ResolveError
from ..index import IndexUnavailable, project_listing
from ..lockfile import Lock, requirements_digest
from ..runtimes import Target
from ..threadpool import ThreadPool
from ..uvdriver import IndexSettings, compile_lock, install_lock, needs_compiling_message
from ..wheelpick import LockedPin, choose_wheel, tag_runs_on, target_priority
from ..zipwriter import RawSource
from .base import BuildRequest, LayerTree

NAME = "wheels"


def resolve_lock(request: BuildRequest) -> Lock:
    """A fresh lock for the request's target (used when no committed lock exists)."""
    recipe, target = request.recipe, request.target
    result = compile_lock(list(recipe.packages), target, request.index, request.work_dir / "resolve")
    return Lock(
        target_slug=target.slug,
        requirements_sha256=requirements_digest(recipe),
        body=result.text,
        sdist=result.sdist_packages,
        backend=NAME,
    )


def prefetch_listings(request: BuildRequest) -> None:
    """Start fetching the recipe's direct requirements' project pages while uv resolves.

    Daemon threads: a stalled index never holds up the exit of a build that failed meanwhile. The
    result is only a head start; plan_downloads asks again for anything that failed.
    """
    index_url = request.index.index_url
    for name in request.recipe.project_names:
        if name in request.listings:
            continue
        future: Future = Future()
        request.listings[name] = future

        def fetch(name=name, future=future):
            try:
                future.set_result(project_listing(name, index_url, timeout=wheelstore.http_timeout(), attempts=1))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks, never raised here
                future.set_exception(exc)

        threading.Thread(target=fetch, name=f"listing-{name}", daemon=True).start()


def plan_downloads(lock: Lock, target: Target, index: IndexSettings,
                   prefetched: dict[str, Future] | None = None) -> list[wheelstore.Download] | None:  # fmt: skip
    """The wheel file to fetch for every pin, or None when some pin has no listed wheel (uv installs then).

    Each project page is asked on the recipe's index first, then its extra indexes; pages are
    fetched concurrently (or were prefetched while uv resolved).
    """
    prefetched = prefetched or {}
    pins, hashes = lock.pins, lock.hashes
    if not pins or any(not hashes.get(name) for name in pins):
        return None
    ranks = target_priority(target)
    indexes = [index.index_url, *index.extra_index_urls]

    def listing_of(name: str, url: str):
        early = prefetched.get(name) if url == index.index_url else None
        if early is not None:
            try:
                return early.result(timeout=wheelstore.http_timeout() + 5)
            except Exception:  # noqa: BLE001 - asked again below, with retries and a clear error
                pass
        try:
            return project_listing(name, url, timeout=wheelstore.http_timeout(), attempts=wheelstore.http_retries() + 1)
        except IndexUnavailable as exc:
            raise ResolveError(f"cannot install for {target}: cannot list {name} on the index: {exc}") from None

    def plan(name: str) -> wheelstore.Download | None:
        pin = LockedPin(name, pins[name], hashes[name])
        for url in indexes:
            chosen = choose_wheel(listing_of(name, url) or [], pin, ranks)
            if chosen is not None:
                return wheelstore.Download(name, chosen, pin.hashes, url)
        return None

    with ThreadPool(max_workers=min(wheelstore.MAX_PARALLEL, len(pins))) as pool:
        planned = list(pool.map(plan, sorted(pins)))
    return None if any(p is None for p in planned) else planned  # type: ignore[return-value]


def install_from_store(lock: Lock, target: Target, index: IndexSettings, work_dir: Path, site: Path,
                       prefetched: dict[str, Future] | None = None) -> dict[str, RawSource] | None:  # fmt: skip
    """Fetch the locked wheels into the shared store and unpack them; None when uv must install instead."""
    if lock.sdist:
        return None  # source distributions are built by uv
    planned = plan_downloads(lock, target, index, prefetched)
    if planned is None:
        return None
    stored = wheelstore.fetch_all(planned)
    # Private links: a concurrent prune of the store cannot take a wheel away mid-build.
    private = work_dir / "wheels"
    private.mkdir()
    local = []
    for path in stored:
        dest = private / path.name
        try:
            link_or_copy(path, dest)
        except FileNotFoundError:  # pruned between fetch and link: fetch it again
            shutil.copyfile(wheelstore.fetch_all([p for p in planned if p.file.filename == path.name])[0], dest)
        local.append(dest)
    return wheelinstall.install_wheels(local, site)


def build(request: BuildRequest) -> LayerTree:
    target = request.target
    lock = request.lock or resolve_lock(request)
    root = request.work_dir / "layer"
    site = root / "python"
    site.mkdir(parents=True)
    raw_sources = install_from_store(lock, target, request.index, request.work_dir, site, request.listings)
    if raw_sources is None:
        lock_path = request.work_dir / "install.lock.txt"
        lock_path.write_text(lock.render(target), encoding="utf-8")
        install_lock(lock_path, target, request.index, site, lock.sdist)

    # A source distribution that built into a platform wheel was compiled for the host: refuse it.
    for dist_info in sorted(site.glob("*.dist-info")):
        tags = wheel_tags(dist_info)
        if tags and not any(tag_runs_on(t, target) for t in tags):
            package = dist_info.name.split("-", 1)[0]
            raise NeedsCompilingError(needs_compiling_message(package, target, f"its source built into {tags[0]}"), package)

    notes = []
    if lock.sdist:
        notes.append(f"built from source as pure Python: {', '.join(sorted(lock.sdist))}")
    raws = {f"python/{path}": raw for path, raw in (raw_sources or {}).items()}
    return LayerTree(root=root, packages=installed_packages(site), backend=NAME, lock_text=lock.render(target), notes=notes,
                     raw_sources=raws)  # fmt: skip
