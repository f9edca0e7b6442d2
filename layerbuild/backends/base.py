"""What every build backend is, receives and returns.

A backend is a module of its own subpackage (backends/wheels/backend.py, backends/docker/backend.py) with a
NAME and two functions: resolve_lock(request) -> Lock (how `layerbuild lock` and an uncommitted build resolve)
and build(request) -> LayerTree. The pipeline knows them only through the Backend protocol below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from layerbuild.backends.indexes import IndexSettings
from layerbuild.model.lockfile import Lock
from layerbuild.model.manifest import PackagePin
from layerbuild.model.recipe import Recipe
from layerbuild.model.runtimes import Target
from layerbuild.util.zipwriter import RawSource

# The build image for every docker build, ranking right after --image (read by build.py, so the cache key has it).
IMAGE_ENV = "LAYERBUILD_BUILD_IMAGE"


@dataclass
class BuildRequest:
    recipe: Recipe
    target: Target
    work_dir: Path  # private scratch directory, removed after the build
    index: IndexSettings
    lock: Lock | None = None  # the committed lock, when there is a current one
    image: str | None = None  # docker backend: the build image to use
    out_dir: Path | None = None  # where the build's outputs go (the docker backend puts failure logs there)


@dataclass
class LayerTree:
    """A built layer before zipping: root holds python/ (and lib/, bin/ when needed)."""

    root: Path
    packages: list[PackagePin]
    backend: str
    lock_text: str = ""  # the lock the build installed from (committed or freshly resolved)
    notes: list[str] = field(default_factory=list)  # shown to the user, recorded in the manifest
    # Layer path -> the wheel member holding the same bytes already deflated (the zip writer copies them).
    raw_sources: dict[str, RawSource] = field(default_factory=dict)

    @property
    def site_packages(self) -> Path:
        return self.root / "python"


class Backend(Protocol):
    """How a layer tree is made for a target: a module with these names (a module satisfies a Protocol)."""

    NAME: str

    def resolve_lock(self, request: BuildRequest) -> Lock:
        """A fresh lock for the request's target (no committed lock exists, or `layerbuild lock` asked)."""
        ...

    def build(self, request: BuildRequest) -> LayerTree:
        """The layer tree, installed from request.lock (resolving first when it is None) under request.work_dir."""
        ...
