"""Build orchestration: recipe target -> backend -> layer tree -> deterministic zip + manifest.

Outputs are written atomically: the zip and manifest are written under temporary names in the
output directory and renamed into place only when everything succeeded, so a failed or
interrupted build never leaves a partial file and never touches an existing good one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from layerbuild import __version__
from layerbuild.cache import prune as cacheprune
from layerbuild.build import cached as cachestep
from layerbuild.build import contents
from layerbuild.build import verifystep
from layerbuild.build.parallel import run_all
from layerbuild.backends.base import IMAGE_ENV, Backend, BuildRequest, LayerTree
from layerbuild.build.outputs import publish_pair, remove_stale_temps, temp_prefix, workdir_prefix
from layerbuild.util.process import sigint_held
from layerbuild.errors import BuildError, DockerUnavailableError, LockError, NeedsCompilingError
from layerbuild.util.records import drop_removed_files, record_paths
from layerbuild.util.tree import matches_any, remove_paths, write_deterministic_zip
from layerbuild.limits import LOCK_MAX_BYTES, read_capped_text
from layerbuild.model.lockfile import Lock, parse_lock, requirements_digest, unsatisfied
from layerbuild.model.manifest import Manifest, manifest_path_for
from layerbuild.model.recipe import Recipe
from layerbuild.model.runtimes import Target
from layerbuild.util.scratch import SCRATCH_ENV, scratch_dir
from layerbuild.util.threadpool import ThreadPool
from layerbuild.backends.indexes import IndexSettings
from layerbuild.verify.venues import SlimmingSuspect

DEFAULT_OUT_DIR = Path("dist")
# Always removed: uv's install lock file, and console scripts carry the build host's interpreter path in their shebang, and
# python/bin is on no path Lambda searches.
ALWAYS_EXCLUDED = ("python/bin", "python/.lock")

Progress = Callable[[Target, str], None]

# The backends there are, by name; each is loaded on first use (a cache hit needs neither, nor uv, the Docker SDK or
# the audit).
BACKEND_NAMES = ("wheels", "docker")
if TYPE_CHECKING:  # mypy checks that each backend module satisfies the Protocol
    from layerbuild.backends.docker import backend as _docker
    from layerbuild.backends.wheels import backend as _wheels

    _CHECKED: tuple[Backend, ...] = (_wheels, _docker)


def load_backend(name: str) -> Backend:
    """The backend module of that name (backends/NAME/backend.py), as a Backend."""
    if name not in BACKEND_NAMES:
        raise BuildError(f"backend {name!r} is not available; available: {', '.join(BACKEND_NAMES)}")
    import importlib

    module: Backend = importlib.import_module(f"layerbuild.backends.{name}.backend")  # type: ignore[assignment]  # a module satisfies the Protocol
    return module


@dataclass
class BuildOutcome:
    target: Target
    zip_path: Path
    manifest_path: Path
    manifest: Manifest
    status: str = "built"  # built | cached
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "target": self.target.slug,
            "status": self.status,
            "zip": str(self.zip_path),
            "manifest": str(self.manifest_path),
            "sha256": self.manifest.sha256,
            "code_sha256": self.manifest.code_sha256,
            "zipped_bytes": self.manifest.zipped_bytes,
            "unzipped_bytes": self.manifest.unzipped_bytes,
            "backend": self.manifest.backend,
            "verified": self.manifest.verified,
            "verification": self.manifest.verification,
            "audit": self.manifest.extra.get("audit"),
            "packages": {p.name: p.version for p in self.manifest.packages},
            "notes": self.notes,
        }


def output_stem(recipe: Recipe, target: Target) -> str:
    return f"{recipe.name}-{target.slug}"


def committed_lock(recipe: Recipe, target: Target, index: IndexSettings) -> Lock | None:
    """The lock committed beside the recipe, if any; a stale lock is an error, not a surprise."""
    path = recipe.lock_path(target)
    if not path.is_file():
        return None
    try:
        lock = parse_lock(read_capped_text(path, LOCK_MAX_BYTES, "lock", LockError))
    except OSError as exc:
        raise LockError(f"{path}: cannot read the lock: {exc.strerror or exc}") from None
    expected = requirements_digest(recipe)
    if lock.requirements_sha256 != expected:
        raise LockError(
            f"{path}: lock is stale (the recipe's packages or index changed since it was written); "
            f"run 'layerbuild lock {recipe.name}' to update it"
        )
    problem = unsatisfied(lock, recipe.requirements, target)
    if problem:  # a truncated or hand-edited lock would build a layer without what the recipe asks for
        raise LockError(f"{path}: the lock does not satisfy the recipe for {target.slug}: {problem}; "
                        f"run 'layerbuild lock {recipe.name}' to update it")  # fmt: skip
    return lock


def finalize_tree(tree: LayerTree, recipe: Recipe) -> list[str]:
    """Prune the layer tree: always-excluded paths and the recipe's exclude globs; returns what went.

    Raises BuildError when an exclude glob removed every file of a package the recipe asks for (the layer
    would ship without it while its manifest lists it)."""
    requested = requested_files(tree.site_packages, recipe.project_names)
    removed = remove_paths(tree.root, ALWAYS_EXCLUDED + tuple(recipe.exclude))
    emptied = emptied_by_exclude(requested, set(removed), recipe.exclude)
    if emptied:
        name, index, files = emptied
        where = f"{recipe.path}: " if recipe.path else ""
        raise BuildError(f"{where}field 'exclude[{index}]': {recipe.exclude[index]!r} removes every file of {name}, "
                         f"which the recipe's packages ask for (e.g. {files[0]}); narrow the pattern or drop {name} "
                         f"from packages")  # fmt: skip
    site_removed = {p[len("python/"):] for p in removed if p.startswith("python/")}
    if tree.site_packages.is_dir():
        drop_removed_files(tree.site_packages, site_removed)
    if recipe.exclude and removed:
        tree.notes.append(f"exclude removed {len(removed)} files")
    return removed


def requested_files(site: Path, names: list[str]) -> dict[str, list[str]]:
    """The layer paths (python/...) of the files each requested distribution installed, from its RECORD
    (its own .dist-info and files outside python/ left out); distributions not installed are absent."""
    from email.parser import HeaderParser

    from packaging.utils import canonicalize_name

    wanted = set(names)
    found: dict[str, list[str]] = {}
    for dist_info in sorted(site.glob("*.dist-info")):
        try:
            meta = HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8", errors="replace"))
            record = (dist_info / "RECORD").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        name = canonicalize_name(meta.get("Name") or "")
        if name not in wanted:
            continue
        paths = record_paths(record)
        found[name] = [f"python/{p}" for p in paths
                       if p and not p.startswith(("../", "/", f"{dist_info.name}/")) and (site / p).is_file()]  # fmt: skip
    return found


def emptied_by_exclude(requested: dict[str, list[str]], removed: set[str],
                       patterns: tuple[str, ...]) -> tuple[str, int, list[str]] | None:  # fmt: skip
    """Pure: the first requested distribution whose every file was removed by one of the recipe's exclude
    patterns, as (name, index of the first pattern matching one of its files, its files); None otherwise."""
    for name, files in sorted(requested.items()):
        if not files or not all(f in removed for f in files):
            continue
        index = next((i for i, pattern in enumerate(patterns) if any(matches_any(f, (pattern,)) for f in files)), None)
        if index is not None:
            return name, index, files
    return None


def choose_backend(recipe: Recipe, requested: str) -> str:
    if requested != "auto":
        return requested
    if recipe.backend != "auto":
        return recipe.backend
    # System packages and copied libraries only exist inside a build image.
    if recipe.system_packages or recipe.libs:
        return "docker"
    return "wheels"


def run_backend(name: str, request: BuildRequest) -> LayerTree:
    return load_backend(name).build(request)


def build_target(recipe: Recipe, target: Target, backend: str = "auto", out_dir: Path = DEFAULT_OUT_DIR,
                 image: str | None = None, progress: Progress | None = None, use_cache: bool = True,
                 verify: bool = True, verify_with: str | None = None) -> BuildOutcome:  # fmt: skip
    """Build one target. With verify (the default), the final tree's modules are imported on the target's
    Python before anything reaches out_dir; when that fails in a layer slimming removed files from, the
    target is built again with those files kept, and shipped if it imports then (the note says what broke)."""
    progress = progress or (lambda t, m: None)
    options = _Options(backend, Path(out_dir), image, progress, use_cache, verify, verify_with)
    try:
        return _build_target(recipe, target, options)
    except SlimmingSuspect as suspect:
        progress(target, f"verification failed after slimming: {suspect.message}; building again with every file "
                         f"slimming removed kept")  # fmt: skip
        return _build_target(recipe, target, options, slimming_broke=suspect)


@dataclass(frozen=True)
class _Options:
    backend: str
    out_dir: Path
    image: str | None
    progress: Progress
    use_cache: bool
    verify: bool
    verify_with: str | None


def _build_target(recipe: Recipe, target: Target, options: _Options,
                  slimming_broke: SlimmingSuspect | None = None) -> BuildOutcome:  # fmt: skip
    backend, out_dir, image, progress, use_cache = options.backend, options.out_dir, options.image, options.progress, options.use_cache
    index = IndexSettings.for_recipe(recipe)
    lock = committed_lock(recipe, target, index)
    chosen = choose_backend(recipe, backend)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"--out {out_dir}: cannot create the output directory: {exc.strerror or exc}") from None
    stem = output_stem(recipe, target)
    zip_path = out_dir / f"{stem}.zip"
    manifest_path = manifest_path_for(zip_path)
    # Leftovers of killed builds (pid gone) must never be mistaken for output or pile up. A zip without a
    # manifest is left alone: it may be the user's (readers refuse it anyway), and only a build that succeeds
    # replaces it, with its own pair.
    remove_stale_temps(out_dir, stem)

    work_dir = Path(tempfile.mkdtemp(prefix=workdir_prefix(stem), dir=scratch_dir()))  # in memory when there is room
    tmp_zip = tmp_manifest = request = None
    try:
        # LAYERBUILD_BUILD_IMAGE ranks right after --image: taken here so the build cache key includes it.
        image = image or os.environ.get(IMAGE_ENV) or None
        request = BuildRequest(recipe=recipe, target=target, work_dir=work_dir, index=index, lock=lock, image=image,
                               out_dir=out_dir)  # fmt: skip
        # Build cache (layerbuild/cache.py): an unchanged target is copied, not rebuilt.
        if use_cache:
            cacheprune.configured_max_size()  # a bad LAYERBUILD_CACHE_MAX_SIZE fails before any work
        cache_key = cachestep.key_for(request, chosen, lambda m: progress(target, m), options.verify) if use_cache else None
        cached = cache_key and cachestep.publish_hit(cache_key, stem, zip_path, manifest_path, lambda m: progress(target, m))
        if cached and not verifystep.verifiable_now(cached, target, options.verify, options.verify_with):
            progress(target, f"cached {zip_path} ({cached.zipped_bytes:,} bytes zipped)")
            return BuildOutcome(target, zip_path, manifest_path, cached, "cached", list(cached.extra.get("notes", [])))
        if cached:
            progress(target, "the cached build was not verified the way asked for now, and can be: building again")
        progress(target, f"building with {chosen}" + (" from the committed lock" if lock else ""))
        try:
            tree = run_backend(chosen, request)
        except NeedsCompilingError as needs:
            if backend != "auto" or recipe.backend != "auto":
                raise
            progress(target, f"{needs.package} needs compiling: switching to the docker backend")
            shutil.rmtree(work_dir)
            work_dir.mkdir()
            request.lock = lock  # a wheels-only resolution is not the image's: lock again inside it
            try:
                tree = run_backend("docker", request)
            except DockerUnavailableError as unavailable:
                raise DockerUnavailableError(
                    f"{needs.package} needs compiling for {target.slug} (no compatible wheel, not pure Python), "
                    f"which needs Docker, but {unavailable}; or pin a version of {needs.package} that ships "
                    f"manylinux wheels for {target.slug} and build with --backend wheels"
                ) from None

        from layerbuild.audit.facts import audit_built_layer, read_elf_tree_facts, read_tree_facts

        excluded = finalize_tree(tree, recipe)
        report = lambda m: progress(target, m)  # noqa: E731
        slimmed = contents.slim_step(tree, recipe, target, report, keep_removals=slimming_broke is not None)
        if slimming_broke is not None:
            note = (f"slimming broke imports, so this layer keeps every file slimming would remove "
                    f"({len(slimming_broke.removed)} files); please report it: {slimming_broke.explain()}")  # fmt: skip
            tree.notes.append(note)
            progress(target, note)

        fd, name = tempfile.mkstemp(prefix=temp_prefix(stem), suffix=".zip.tmp", dir=out_dir)
        os.close(fd)
        tmp_zip = Path(name)
        # The audit's facts are read on a side thread (pure Python, mostly ELF parsing): the ELF files
        # while the bytecode compiler's processes run, the rest while the zip writer's threads deflate
        # (zlib releases the GIL). On two cores the audit costs almost nothing.
        with ThreadPool(max_workers=2) as side:
            elf_facts = []  # started once the compiler's processes run, not while cached bytecode is copied in
            start_elf = lambda: elf_facts.append(side.submit(read_elf_tree_facts, tree.root))  # noqa: E731
            contents.bytecode_step(tree, recipe, target, report, start_elf)
            if not elf_facts:
                start_elf()  # the docker backend compiled already
            # The tree is final: its imports are tried on the target's Python while the zip is written.
            with verifystep.verification_of(tree, recipe, target, options.verify, options.verify_with, side,
                                            report) as verifying:  # fmt: skip
                facts = side.submit(lambda: read_tree_facts(tree.root, elf_facts[0].result()))
                summary = write_deterministic_zip(tree.root, tmp_zip, tree.raw_sources)
                # Errors raise: nothing reaches out_dir.
                audit_summary = audit_built_layer(facts.result(), target, summary.zipped_bytes, tree.notes)
                for warning in audit_summary.get("warnings", []):
                    progress(target, f"audit warning [{warning['rule']}] {warning['message']}")
                verified = verifying.outcome(slimmed.removed if slimmed and slimming_broke is None else [], excluded)
            if slimming_broke is not None:
                verified["verification"]["slimming_broke"] = slimming_broke.explain()

        manifest = Manifest(
            name=recipe.name,
            runtime=target.runtime.name,
            python=target.python,
            architecture=target.arch,
            backend=tree.backend,
            packages=tree.packages,
            file_count=summary.file_count,
            zipped_bytes=summary.zipped_bytes,
            unzipped_bytes=summary.unzipped_bytes,
            sha256=summary.sha256,
            code_sha256=summary.code_sha256,
            zip=zip_path.name,
            description=recipe.description,
            license=recipe.license,
            compatible_runtimes=[target.runtime.name],
            lock_sha256=_sha256_text(tree.lock_text) if tree.lock_text else None,
            layerbuild_version=__version__,
            extra={**({"notes": tree.notes} if tree.notes else {}), "audit": audit_summary},
            **verified,
        )
        fd, name = tempfile.mkstemp(prefix=temp_prefix(stem), suffix=".json.tmp", dir=out_dir)
        tmp_manifest = Path(name)  # before writing: an interrupt mid-write must still clean it up
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(manifest.to_json())
        for tmp in (tmp_zip, tmp_manifest):
            os.chmod(tmp, 0o644)
        if cache_key:
            # From our own temp files: once published, dist/ may already hold a concurrent build's
            # (different) zip, which must never be cached under this build's key.
            cachestep.cache.store(cache_key, tmp_zip, tmp_manifest)
            cacheprune.prune_after_store()
        # Under a lock with Ctrl-C held back: concurrent builds never leave a mixed pair.
        publish_pair(tmp_zip, zip_path, tmp_manifest, manifest_path)
        tmp_zip = tmp_manifest = None
        progress(target, f"built {zip_path} ({summary.zipped_bytes:,} bytes zipped, {summary.unzipped_bytes:,} unzipped)")
        return BuildOutcome(target, zip_path, manifest_path, manifest, "built", tree.notes)
    except OSError as exc:  # the machine, not a bug: disk full, read-only or vanished directory
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # say where the build writes: scratch (maybe in memory) and out
            where += (f"; the build works in {work_dir.parent} (set {SCRATCH_ENV} to use another directory) "
                      f"and writes to {out_dir}")  # fmt: skip
        raise BuildError(f"cannot build {stem}: {exc.strerror or exc}{where}; nothing was written to {out_dir}") from None
    finally:
        with sigint_held():  # a Ctrl-C landing here must not cut the cleanup short
            for tmp in (tmp_zip, tmp_manifest):
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            shutil.rmtree(work_dir, ignore_errors=True)


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_recipe(recipe: Recipe, pythons=None, arches=None, backend: str = "auto", out_dir: Path = DEFAULT_OUT_DIR,
                 image: str | None = None, progress: Progress | None = None, use_cache: bool = True,
                 verify: bool = True, verify_with: str | None = None) -> list[BuildOutcome]:  # fmt: skip
    """Build every target of the recipe (or the narrowed matrix), concurrently."""
    return build_recipes([recipe], pythons, arches, backend, out_dir, image, progress, use_cache, verify, verify_with)


def build_recipes(recipes: list[Recipe], pythons=None, arches=None, backend: str = "auto", out_dir: Path = DEFAULT_OUT_DIR,
                  image: str | None = None, progress: Progress | None = None, use_cache: bool = True,
                  verify: bool = True, verify_with: str | None = None) -> list[BuildOutcome]:  # fmt: skip
    """Build every target of every recipe on a bounded pool; raises parallel.TargetFailures listing all failures."""
    jobs = [(recipe, target) for recipe in recipes for target in recipe.targets(pythons, arches)]
    report = progress or (lambda t, m: None)
    return run_all(jobs, lambda job: build_target(job[0], job[1], backend, out_dir, image, progress, use_cache, verify,
                                                  verify_with),
                   label=lambda job: output_stem(*job), on_failure=lambda job, exc: report(job[1], f"failed: {exc.message}"))


def lock_recipe(recipe: Recipe, pythons=None, arches=None, progress: Progress | None = None) -> list[Path]:
    """Resolve and write recipes/NAME.lock/<target>.txt for every target."""
    progress = progress or (lambda t, m: None)
    index = IndexSettings.for_recipe(recipe)
    written = []
    for target in recipe.targets(pythons, arches):
        work_dir = Path(tempfile.mkdtemp(prefix=f"layerbuild-lock-{recipe.name}-"))
        try:
            request = BuildRequest(recipe=recipe, target=target, work_dir=work_dir, index=index)
            try:
                try:
                    lock = load_backend(choose_backend(recipe, "auto")).resolve_lock(request)
                except NeedsCompilingError:
                    if recipe.backend != "auto":
                        raise
                    lock = load_backend("docker").resolve_lock(request)  # compiled requirements are locked inside the build image
            except OSError as exc:  # the machine, not a bug: a full or read-only temp directory
                where = f" ({exc.filename})" if exc.filename else ""
                raise BuildError(f"cannot lock {recipe.name} for {target}: {exc.strerror or exc}{where}; "
                                 f"locking works in {work_dir.parent} (set TMPDIR to use another directory)") from None  # fmt: skip
            path = recipe.lock_path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.slug}.", suffix=".tmp", dir=path.parent)
            try:  # lock directories are committed: never leave a temp file in one
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(lock.render(target))
                os.chmod(name, 0o644)
                os.replace(name, path)
            finally:
                Path(name).unlink(missing_ok=True)
            progress(target, f"locked {len(lock.pins)} packages in {path}")
            written.append(path)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    return written
