"""The Docker-free backend: install target-compatible wheels with uv into python/.

Only wheels whose tags run on the target (Python version x architecture x glibc) are taken;
projects that publish no wheel at all are accepted as source distributions only when building
them gives a pure-Python wheel.
"""

from __future__ import annotations

from packaging.tags import parse_tag

from ..distinfo import installed_packages, wheel_tags
from ..errors import NeedsCompilingError
from ..lockfile import Lock, requirements_digest
from ..runtimes import Target
from ..uvdriver import compile_lock, install_lock, needs_compiling_message
from .base import BuildRequest, LayerTree

NAME = "wheels"


def tag_runs_on(tag_text: str, target: Target) -> bool:
    """Whether a wheel tag (possibly compressed, cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64) fits."""
    platforms = set(target.runtime.platform_tags(target.arch)) | {"any"}
    interpreters = {target.runtime.cpython_tag, f"py{target.runtime.version_tuple[0]}", "py3",
                    f"py{target.python.replace('.', '')}"}  # fmt: skip
    for tag in parse_tag(tag_text):
        if tag.platform not in platforms:
            continue
        if tag.abi == "abi3" and tag.interpreter.startswith("cp"):
            if int(tag.interpreter[3:] or 0) <= target.runtime.version_tuple[1]:
                return True
        elif tag.interpreter in interpreters and tag.abi in ("none", target.runtime.cpython_tag):
            return True
    return False


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


def build(request: BuildRequest) -> LayerTree:
    target = request.target
    lock = request.lock or resolve_lock(request)
    lock_path = request.work_dir / "install.lock.txt"
    lock_path.write_text(lock.render(target), encoding="utf-8")
    root = request.work_dir / "layer"
    site = root / "python"
    site.mkdir(parents=True)
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
    return LayerTree(root=root, packages=installed_packages(site), backend=NAME, lock_text=lock.render(target), notes=notes)
