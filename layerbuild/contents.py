"""The layer-contents step between finalize_tree and zipping: slimming, then bytecode."""

from __future__ import annotations

from typing import Callable

from . import bytecode, slim
from .backends.base import LayerTree
from .recipe import Recipe
from .runtimes import Target


def toolchain_identity(recipe: Recipe, target: Target) -> dict:
    """The local tools whose presence changes the layer's bytes (part of the build cache key)."""
    return {
        "bytecode": bytecode.interpreter_identity(target.python) if recipe.bytecode != "none" else "none",
        "strip": (slim.strip_tool(target.arch) or "none") if recipe.slim else "none",
    }


def slim_step(tree: LayerTree, recipe: Recipe, target: Target, progress: Callable[[str], None]) -> None:
    """Slim in place unless `slim: false`; notes go to the manifest. Bytecode comes after (bytecode_step)."""
    cache_tag = f"cpython-{target.python.replace('.', '')}"
    if recipe.slim:
        result = slim.slim_tree(tree.root, target.arch, cache_tag)
        for note in [result.summary(), *result.notes]:
            tree.notes.append(note)
            progress(note)


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
