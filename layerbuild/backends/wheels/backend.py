"""The Docker-free backend: install target-compatible wheels with uv into python/.

Only wheels whose tags run on the target (Python version x architecture x glibc) are taken;
projects that publish no wheel at all are accepted as source distributions only when building
them gives a pure-Python wheel.
"""

from __future__ import annotations

import shutil
import threading
import zipfile
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from layerbuild.backends.base import BuildRequest, LayerTree
from layerbuild.backends.distinfo import installed_packages, wheel_tags
from layerbuild.backends.indexes import IndexSettings
from layerbuild.backends.wheels import install as wheelinstall
from layerbuild.backends.wheels import store as wheelstore
from layerbuild.backends.wheels.index import IndexUnavailable, project_listing
from layerbuild.backends.wheels.pick import (
    LockedPin,
    choose_wheel,
    likely_version,
    resolver_priority,
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


def likely_candidates(recipe) -> dict[str, Requirement]:
    """Pure: canonical name -> the recipe's requirement, for those not pinned to one version whose locked
    release the index page lets us guess (no environment marker; a recipe names each project once)."""
    pinned = exact_pins(recipe)
    return {name: r for r in recipe.requirements if r.marker is None and (name := canonicalize_name(r.name)) not in pinned}


def dependencies_on(metadata: str, extras: frozenset[str], target: Target) -> list[Requirement]:
    """Pure: the Requires-Dist entries of a wheel's METADATA that apply on the target, for these extras."""
    import email.parser

    found = []
    for line in email.parser.HeaderParser().parsestr(metadata).get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.url is None and _applies(requirement, extras, target):
            found.append(requirement)
    return found


def _applies(requirement: Requirement, extras: frozenset[str], target: Target) -> bool:
    if requirement.marker is None:
        return True
    try:
        return any(requirement.marker.evaluate(target.marker_environment(extra)) for extra in ("", *sorted(extras)))
    except Exception:  # noqa: BLE001 - packaging raises on comparisons it cannot make (python_version ~= "abc"): skip it
        return False


def exact_pins(recipe) -> dict[str, str]:
    """Pure: canonical name -> version of the recipe's requirements pinned to one version (==X, no
    wildcard, no environment marker): the lock is sure to pin them so, whatever else it resolves."""
    pins = {}
    for requirement in recipe.requirements:
        specs = list(requirement.specifier)
        if (requirement.marker is None and len(specs) == 1 and specs[0].operator in ("==", "===")
                and "*" not in specs[0].version):  # fmt: skip
            pins[canonicalize_name(requirement.name)] = specs[0].version
    return pins


class WheelPipeline:
    """Wheels downloaded and unpacked each as soon as it arrives, on their own threads.

    Two uses: a head start for the recipe's direct requirements while uv resolves (the pinned or the
    likely version, begun from the index page's sha256: speculative), and every locked wheel once the
    lock is known (begun from the lock's hashes: what fails there fails the build). The install takes a wheel from here
    only when it is the file the lock chose and was checked against hashes the lock allows; a
    speculative one that failed is done again the usual way. Downloads go to the wheel store on
    daemon threads (a stalled index never holds up a build that ended meanwhile); unpacking goes
    below the build's scratch tree and ends before stop() returns, so nothing is written there once
    the build cleans up.
    """

    def __init__(self, work_dir: Path):
        self.folder = work_dir / "pipeline"
        self._changed = threading.Condition()
        self._stopped = False
        self._unpacking = 0
        self._results: dict[str, Future] = {}  # wheel file name -> Future of wheelinstall.Unpacked
        self._checked: dict[str, frozenset[str]] = {}  # wheel file name -> the hashes its download was checked against
        self._speculative: dict[str, bool] = {}
        self._dropped: set[str] = set()  # head starts the lock did not confirm: their download and unpack end
        self._settled = False  # the lock is known: no more head starts, and none of those it chose is dropped
        self._downloading = threading.BoundedSemaphore(wheelstore.MAX_PARALLEL)  # at once, as fetch_all

    def begin(self, download: wheelstore.Download, speculative: bool,
              fetched: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        """Start on a wheel, unless it is under way already (the head start and the lock may both ask for
        it: one unpack per file) or the pipeline has stopped. fetched(path), if given, is called with the
        stored wheel before it is unpacked (a failure there is ignored)."""
        name = download.file.filename
        with self._changed:
            if name in self._results or self._stopped or (speculative and self._settled):
                return
            future: Future = Future()
            self._results[name], self._checked[name], self._speculative[name] = future, download.allowed, speculative
        threading.Thread(target=self._run, args=(download, future, fetched), name=f"wheel-{download.package}",
                         daemon=True).start()  # fmt: skip

    def _run(self, download: wheelstore.Download, future: Future, fetched: Callable[[Path], None] | None) -> None:
        name = download.file.filename

        def unwanted() -> bool:  # asked between download blocks and unpacked members
            return self._stopped or name in self._dropped

        try:
            with self._downloading:
                stored = wheelstore.fetch(download, cancelled=unwanted)
            if fetched is not None and not unwanted():
                try:
                    fetched(stored)
                except Exception:  # noqa: BLE001 - only ever a head start for more wheels
                    pass
            with self._changed:
                if unwanted():
                    raise wheelinstall.Stopped()
                self._unpacking += 1
            try:
                private = self.folder / "wheels" / stored.name
                private.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(stored, private)  # a concurrent prune of the store cannot take it away
                (unpacked,) = wheelinstall.unpack_wheels([private], self.folder, stop=unwanted)
                future.set_result(unpacked)
            finally:
                with self._changed:
                    self._unpacking -= 1
                    self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to take()
            future.set_exception(exc)

    def take(self, filename: str, allowed: frozenset[str]) -> wheelinstall.Unpacked | None:
        """The wheel's unpacked files (waiting for a download or unpack under way), when it was begun
        with hashes the lock allows; None when it was not, or a speculative one failed. A failure of
        one begun from the lock is raised: it is the build's."""
        future = self._results.get(filename)
        if future is None or not self._checked[filename] <= allowed:
            return None
        speculative = self._speculative[filename]
        try:  # no time limit: a download that stops making progress fails by its own read timeout
            return future.result()
        except LayerbuildError:
            if speculative:
                return None
            raise
        except Exception:  # noqa: BLE001 - stopped, timed out, or the disk: done again the usual way, which reports it
            return None

    def drop_head_starts_except(self, wanted: set[str], only: set[str] | None = None) -> None:
        """Head starts of files not wanted (a wrong guess) stop downloading and unpacking: every other one
        once the lock is known, or those named in `only` when a guess is redone."""
        with self._changed:
            if only is not None and self._settled:
                return  # a late second guess: what the lock chose stays
            self._dropped |= {name for name, speculative in self._speculative.items()
                              if speculative and name not in wanted and (only is None or name in only)}  # fmt: skip
            self._settled = self._settled or only is None

    def stop(self) -> None:
        """No new unpacking; returns once none is under way (each checks between members)."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._unpacking == 0, timeout=60)


def prefetch_listings(request: BuildRequest) -> None:
    """Start fetching project pages while uv resolves, and give wheels a head start (see WheelPipeline).

    The recipe's requirements come first: one pinned to a version at that version, any other at the
    release uv will most likely lock (wheelpick.likely_version: the newest the specifier admits that has
    a wheel for the target). As each head-started wheel arrives, its own requirements (Requires-Dist, for
    the target's markers and the extras asked for) get the same, up to MAX_HEAD_STARTS projects: uv
    resolves the whole tree before it answers, and by then most of the tree is here. A wrong guess
    costs a download that stops once the lock is known; the lock's files are installed either way.

    Daemon threads: a stalled index never holds up the exit of a build that failed meanwhile. The
    result is only a head start; plan_downloads asks again for anything that failed.
    """
    pins = exact_pins(request.recipe)
    guesses = likely_candidates(request.recipe)
    # uv may take a release from an extra index (torch's CPU builds): no head starts then, only the pages.
    head_starts = not request.index.extra_index_urls
    if head_starts and (pins or guesses) and request.wheel_pipeline is None:
        request.wheel_pipeline = WheelPipeline(request.work_dir)
    prefetch = _Prefetch(request, pins if head_starts else {}, head_starts)
    for name in request.recipe.project_names:  # a requirement with an environment marker: its page only
        prefetch.start(name, guesses.get(name), direct=True)


MAX_HEAD_STARTS = 64  # projects whose pages (and likely wheels) one build asks for ahead of the lock


class _Prefetch:
    """The pages and head starts of one build, started on threads as they are discovered.

    Every requirement seen for a project narrows what its head start may be: when a wheel that arrives
    later asks for `python-dateutil<3` and the guess was 4.0.0, the guess is redone within both (and the
    first one dropped), as the lock will do."""

    def __init__(self, request: BuildRequest, pins: dict[str, str], guess: bool):
        self.request, self.pins, self.guess = request, pins, guess
        self.ranks = target_priority(request.target)  # which file of a release the install takes
        self.resolver_ranks = resolver_priority(request.target)  # which releases uv can lock at all
        self.lock = threading.Lock()
        self.wanted: dict[str, SpecifierSet] = {}  # what every requirement seen so far admits
        self.extras: dict[str, frozenset[str]] = {}
        self.listed: dict[str, list] = {}  # pages fetched so far
        self.begun: dict[str, tuple[str, str]] = {}  # (version, file name) of each head start

    def start(self, name: str, requirement: Requirement | None, direct: bool = False) -> None:
        """Ask for a project's page, and a head start within requirement (None: the page only)."""
        with self.lock:
            if requirement is not None:
                self.wanted[name] = self.wanted.get(name, SpecifierSet()) & requirement.specifier
                self.extras[name] = self.extras.get(name, frozenset()) | frozenset(requirement.extras)
            if name in self.request.listings:
                redo = (name in self.listed and name in self.begun and name not in self.pins
                        and not self.wanted[name].contains(self.begun[name][0], prereleases=True))  # fmt: skip
                if redo:
                    self._head_start(name)
                return
            if not direct and (self.request.lock is not None or len(self.request.listings) >= MAX_HEAD_STARTS):
                return  # the lock is known (the install asks for what it needs), or enough was asked ahead
            future: Future = Future()
            self.request.listings[name] = future
        threading.Thread(target=self._fetch, args=(name, future), name=f"listing-{name}", daemon=True).start()

    def _fetch(self, name: str, future: Future) -> None:
        try:
            listing = project_listing(name, self.request.index.index_url, timeout=wheelstore.http_timeout(), attempts=1)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks, never raised here
            future.set_exception(exc)
            return
        try:  # begun before the listing is handed over, so the install finds it under way
            with self.lock:
                self.listed[name] = listing or []
                self._head_start(name)
        finally:
            future.set_result(listing)

    def _head_start(self, name: str) -> None:
        """Begin the wheel of the pinned or likely version (called with self.lock held); nothing once the
        lock is known: the install asks for what it needs."""
        listing, pipeline = self.listed[name], self.request.wheel_pipeline
        if self.request.lock is not None:
            return
        version = self.pins.get(name)
        if version is None and self.guess and name in self.wanted:
            version = likely_version(listing, name, self.wanted[name], self.request.target.python, self.resolver_ranks)
        if version is None or not listing or pipeline is None:
            return
        listed = frozenset(f.sha256.lower() for f in listing if f.sha256)
        chosen = choose_wheel(listing, LockedPin(name, version, listed), self.ranks)
        if chosen is None or not chosen.sha256:  # a head start is checked against what the index says it is
            return
        if name in self.begun:
            pipeline.drop_head_starts_except(set(), only={self.begun[name][1]})
        self.begun[name] = (version, chosen.filename)
        download = wheelstore.Download(name, chosen, frozenset({chosen.sha256.lower()}), self.request.index.index_url)
        pipeline.begin(download, speculative=True, fetched=lambda wheel: self._dependencies(wheel, name))

    def _dependencies(self, wheel: Path, name: str) -> None:
        """Head starts for what this wheel requires (called as soon as it is downloaded)."""
        if not self.guess:
            return
        with zipfile.ZipFile(wheel) as archive:
            found = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(found) != 1 or archive.getinfo(found[0]).file_size > 4 << 20:
                return
            metadata = archive.read(found[0]).decode("utf-8", "replace")
        for requirement in dependencies_on(metadata, self.extras.get(name, frozenset()), self.request.target):
            self.start(canonicalize_name(requirement.name), requirement)


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
                       prefetched: dict[str, Future] | None = None,
                       pipeline: WheelPipeline | None = None) -> dict[str, RawSource] | None:  # fmt: skip
    """Fetch the locked wheels into the shared store and unpack them; None when uv must install instead.

    Each wheel is unpacked as soon as it is downloaded (WheelPipeline), not once all are; wheels
    the head start already has are taken from it.
    """
    planned = None if lock.sdist else plan_downloads(lock, target, index, prefetched)  # uv builds source distributions
    if planned is None:
        if pipeline is not None:
            pipeline.stop()  # uv installs: a head start would only compete with it
        return None
    pipeline = pipeline or WheelPipeline(work_dir)
    pipeline.drop_head_starts_except({d.file.filename for d in planned})
    try:
        for download in planned:
            pipeline.begin(download, speculative=False)  # a wheel the head start has under way is not begun again
        ready = {d.file.filename: found for d in planned if (found := pipeline.take(d.file.filename, d.allowed))}
    finally:
        pipeline.stop()  # nothing more to come from it: its threads must not compete with the install
    stored = wheelstore.fetch_all([d for d in planned if d.file.filename not in ready])  # what the head start missed
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
    raw_sources = install_from_store(lock, target, request.index, request.work_dir, site, request.listings,
                                     request.wheel_pipeline)
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
