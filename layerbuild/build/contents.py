"""The layer-contents step between finalize_tree and zipping: slimming, then bytecode."""

from __future__ import annotations

import os
from typing import Callable

from layerbuild.build import bytecode
from layerbuild.build import slim
from layerbuild.backends.base import LayerTree
from layerbuild.model.recipe import Recipe
from layerbuild.model.runtimes import Target


def toolchain_identity(recipe: Recipe, target: Target, verify: bool = True) -> dict:
    """The local tools whose presence changes the layer's bytes or what its manifest claims (part of the
    build cache key): a build without verification is never served to one that asks for it."""
    return {
        "bytecode": bytecode.interpreter_identity(target.python) if recipe.bytecode != "none" else "none",
        "strip": _real(slim.strip_tool(target.arch)) if recipe.slim else "none",
        "verify": "on" if verify else "off",
    }


def _real(path: str | None) -> str:
    """The tool itself, however it is reached (a symlink on PATH is the same strip)."""
    return os.path.realpath(path) if path else "none"


def slim_step(tree: LayerTree, recipe: Recipe, target: Target, progress: Callable[[str], None],
              keep_removals: bool = False) -> slim.SlimResult | None:  # fmt: skip
    """Slim in place unless `slim: false` (keep_removals: strip debug symbols only, remove nothing); notes go
    to the manifest. Bytecode comes after (bytecode_step)."""
    cache_tag = f"cpython-{target.python.replace('.', '')}"
    if not recipe.slim:
        return None
    result = slim.slim_tree(tree.root, target.arch, cache_tag, remove=not keep_removals)
    for note in [result.summary(), *result.notes]:
        tree.notes.append(note)
        progress(note)
    return result


def bytecode_step(tree: LayerTree, recipe: Recipe, target: Target, progress: Callable[[str], None],
                  while_compiling: Callable[[], None] | None = None) -> None:  # fmt: skip
    """After slimming (nothing is compiled that slimming removes). while_compiling: see bytecode.compile_tree."""
    if getattr(tree, "bytecode_compiled", False):
        # The docker backend compiles inside the build image, with the target's own python.
        progress("bytecode: compiled by the backend with the image's python")
        return
    result = bytecode.compile_tree(tree.site_packages, target.python, recipe.bytecode, while_compiling=while_compiling)
    tree.raw_sources.update({f"python/{path}": raw for path, raw in result.raw_sources.items()})
    if result.note:
        tree.notes.append(result.note)
        progress(result.note)
