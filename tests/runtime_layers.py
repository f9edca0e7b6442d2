"""Layers for the test/invoke tests: real ones built with the wheels backend, and hand-made ones."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from layerbuild.build.pipeline import build_target
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import make_target


def build_real_layer(out_dir: Path, name: str, packages: list[str], python: str = "3.11") -> Path:
    recipe = parse_recipe({"name": name, "packages": packages, "python": [python]}, f"<test {name}>")
    return build_target(recipe, make_target(python, "x86_64"), backend="wheels", out_dir=out_dir).zip_path


def make_layer(path: Path, files: dict[str, str | bytes], manifest: dict | None = None) -> Path:
    """A hand-made layer zip; with manifest, a layerbuild-style manifest beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    if manifest is not None:
        path.with_suffix(".json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def hostile_layer(path: Path) -> Path:
    return make_layer(path, {"python/ok.py": "", "../escaped.py": "print('out')\n"})
