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

from layerbuild.backends.base import BuildRequest, LayerTree
from layerbuild.backends.distinfo import installed_packages, wheel_tags
from layerbuild.backends.indexes import IndexSettings
from layerbuild.backends.wheels import install as wheelinstall
from layerbuild.backends.wheels import store as wheelstore
from layerbuild.backends.wheels.index import IndexUnavailable, project_listing
from layerbuild.backends.wheels.pick import (
    LockedPin,
    choose_wheel,
    tag_runs_on,
    target_priority,
)
from layerbuild.backends.wheels.uv import (
    compile_lock,
    install_lock,
    needs_compiling_message,
)
from layerbuild.cache.builds import link_or_copy
from layerbuild.errors import LayerbuildError, NeedsCompilingError, ResolveError
from layerbuild.model.lockfile import Lock, requirements_digest
from layerbuild.model.runtimes import Target
from layerbuild.util.threadpool import ThreadPool
from layerbuild.util.zipwriter import RawSource

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


class WheelPipeline:
    """The locked wheels downloaded and unpacked each as soon as it arrives, on their own threads.

    Downloads go to the wheel store on daemon threads (a stalled index never holds up a build that ended
    meanwhile); unpacking goes below the build's scratch tree and ends before stop() returns, so nothing is
    written there once the build cleans up.
    """

    def __init__(self, work_dir: Path):
        self.folder = work_dir / "pipeline"
        self._changed = threading.Condition()
        self._stopped = False
        self._unpacking = 0
        self._results: dict[str, Future] = {}  # wheel file name -> Future of wheelinstall.Unpacked
        self._downloading = threading.BoundedSemaphore(wheelstore.MAX_PARALLEL)  # at once, as fetch_all
        self._budget = wheelinstall.UnpackBudget()  # the wheels unpacking side by side share the size ceiling

    def begin(self, download: wheelstore.Download) -> None:
        """Start on a wheel, unless it is under way already (one unpack per file) or the pipeline has stopped."""
        name = download.file.filename
        with self._changed:
            if name in self._results or self._stopped:
                return
            future: Future = Future()
            self._results[name] = future
        threading.Thread(target=self._run, args=(download, future), name=f"wheel-{download.package}",
                         daemon=True).start()  # fmt: skip

    def _run(self, download: wheelstore.Download, future: Future) -> None:
        def stopped() -> bool:  # asked between download blocks and unpacked members
            return self._stopped

        try:
            with self._downloading:
                stored = wheelstore.fetch(download, cancelled=stopped)
            with self._changed:
                if self._stopped:
                    raise wheelinstall.Stopped()
                self._unpacking += 1
            try:
                private = self.folder / "wheels" / stored.name
                private.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(stored, private)  # a concurrent prune of the store cannot take it away
                (unpacked,) = wheelinstall.unpack_wheels([private], self.folder, stop=stopped, budget=self._budget)
                future.set_result(unpacked)
            finally:
                with self._changed:
                    self._unpacking -= 1
                    self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to take()
            future.set_exception(exc)

    def take(self, filename: str) -> wheelinstall.Unpacked | None:
        """The wheel's unpacked files, waiting for a download or unpack under way; None when it was never
        begun or was stopped (then it is installed the usual way, which reports any problem). A build
        error of its own (a hash mismatch, a damaged wheel) is raised: it is the build's."""
        future = self._results.get(filename)
        if future is None:
            return None
        try:  # no time limit here: a download has its own total deadline
            return future.result()
        except LayerbuildError:
            raise
        except Exception:  # noqa: BLE001 - stopped, or the disk: done again the usual way, which reports it
            return None

    def stop(self) -> None:
        """No new unpacking; returns once none is under way (each checks between members)."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._unpacking == 0, timeout=60)


def plan_downloads(lock: Lock, target: Target, index: IndexSettings) -> list[wheelstore.Download] | None:
    """The wheel file to fetch for every pin, or None when some pin has no listed wheel (uv installs then).

    Each project page is asked on the recipe's index first, then its extra indexes; pages are fetched
    concurrently.
    """
    pins, hashes = lock.pins, lock.hashes
    if not pins or any(not hashes.get(name) for name in pins):
        return None
    ranks = target_priority(target)
    indexes = [index.index_url, *index.extra_index_urls]

    def listing_of(name: str, url: str):
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


def install_from_store(lock: Lock, target: Target, index: IndexSettings, work_dir: Path,
                       site: Path) -> dict[str, RawSource] | None:  # fmt: skip
    """Fetch the locked wheels into the shared store and unpack them; None when uv must install instead.

    Each wheel is unpacked as soon as it is downloaded (WheelPipeline), not once all are.
    """
    planned = None if lock.sdist else plan_downloads(lock, target, index)  # uv builds source distributions
    if planned is None:
        return None
    pipeline = WheelPipeline(work_dir)
    try:
        for download in planned:
            pipeline.begin(download)
        ready = {d.file.filename: found for d in planned if (found := pipeline.take(d.file.filename))}
    finally:
        pipeline.stop()  # nothing more to come from it: its threads must not compete with the install
    stored = wheelstore.fetch_all([d for d in planned if d.file.filename not in ready])  # what the pipeline gave up on
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
    local += [unpacked.wheel for unpacked in ready.values()]
    return wheelinstall.install_wheels(local, site, ready)


def build(request: BuildRequest) -> LayerTree:
    target = request.target
    lock = request.lock or resolve_lock(request)
    root = request.work_dir / "layer"
    site = root / "python"
    site.mkdir(parents=True)
    raw_sources = install_from_store(lock, target, request.index, request.work_dir, site)
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
