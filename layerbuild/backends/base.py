"""What every build backend receives and returns."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # wheels backend: project pages fetched while uv resolves (canonical name -> Future of the listing).
    listings: dict[str, Future] = field(default_factory=dict)
    # wheels backend: exactly pinned wheels fetched and unpacked meanwhile (backends.wheels.WheelPipeline); build.py
    # stops it before the scratch tree goes.
    wheel_pipeline: Any = None


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
