"""Verification inside a target build: the final tree's modules imported on the target's Python while the
zip is written; what the manifest records of it."""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from layerbuild.verify import venues as verify
from layerbuild.backends.base import LayerTree
from layerbuild.errors import LayerbuildError
from layerbuild.model.manifest import Manifest
from layerbuild.verify.optdir import read_only_tree
from layerbuild.model.recipe import Recipe
from layerbuild.model.runtimes import Target
from layerbuild.util.threadpool import ThreadPool

VERIFY_WITH = verify.VENUES


def order(verify_with: str | None) -> tuple[str, ...]:
    return (verify_with,) if verify_with else verify.BUILD_ORDER


class Verifying:
    """A verification under way (or one that cannot happen, and why)."""

    def __init__(self, target: Target, progress, reason: str | None = None):
        self.target, self.progress = target, progress
        self.reason = reason  # why it is not verified, when it cannot be
        self.future: Future | None = None

    def outcome(self, removed: list[str], excluded: list[str]) -> dict[str, Any]:
        """Manifest fields {verified, verification}; raises VerifyError (SlimmingSuspect when slimming
        removed files) when a module does not import, naming the recipe's exclude when it removed the culprit."""
        if self.future is None:
            self.progress(f"not verified: {self.reason}")
            return {"verified": False, "verification": {"reason": self.reason}}
        try:
            run = self.future.result()
        except (verify.CannotTestError, verify.RuntimeSdkError) as exc:  # the machine's limits, not the layer's
            self.progress(f"not verified: {exc.message}")
            return {"verified": False, "verification": {"reason": exc.message}}
        except verify.VerifyError:
            raise
        except LayerbuildError as exc:  # the interpreter died importing a module, or an import never ended
            raise _failure(exc.message, None, removed, excluded) from None
        if not run.ok:
            raise _failure(verify.failure_line(run.failures, run.venue.where), run, removed, excluded)
        count = f"{len(run.results)} modules import" if len(run.results) != 1 else "1 module imports"
        self.progress(f"verified: {count} on Python {run.python} ({run.venue.where}) in {run.seconds:.2f} s")
        return {"verified": True, "verification": run.record()}


def _failure(message: str, run: verify.ImportRun | None, removed: list[str], excluded: list[str]) -> verify.VerifyError:
    culprits = sorted({c for f in (run.failures if run else []) if (c := verify.removed_file_for(f, set(excluded)))})
    if culprits:  # the recipe asked for it: slimming is not to blame, and building again would not help
        return verify.VerifyError(f"{message}; the recipe's exclude removed {', '.join(culprits)}: narrow exclude "
                                  f"(nothing was written)")  # fmt: skip
    if removed:
        return verify.SlimmingSuspect(message, run, removed)
    return verify.VerifyError(f"{message}; nothing was written (use --no-verify to build it anyway)")


@contextmanager
def verification_of(tree: LayerTree, recipe: Recipe, target: Target, enabled: bool, verify_with: str | None,
                    pool: ThreadPool, progress):  # fmt: skip
    """Start importing the tree's modules (read-only) on a thread of pool; the tree stays read-only until
    the block ends, which waits for the import run (a failed build stops it)."""
    if not enabled:
        yield Verifying(target, progress, "--no-verify")
        return
    modules = verify.modules_to_verify(tree.root, target.python, recipe.imports)
    if not modules:
        yield Verifying(target, progress, "the layer holds no Python package or module and the recipe names no imports:")
        return
    venue, why = verify.find_venue(target, order(verify_with), pull=False, strict=False)
    if venue is None and verify_with:  # asked for by name: the build cannot claim what it was asked to check
        raise verify.VerifyError(f"--verify-with {verify_with}: cannot verify {target.slug} this way: "
                                 f"{why.get(verify_with, 'not available')}; nothing was written")  # fmt: skip
    if venue is None:
        hint = f"; install python{target.python} for {target.machine} (on PATH or with pyenv) to verify" if "local" in why else ""
        yield Verifying(target, progress, "; ".join(f"{kind}: {reason}" for kind, reason in why.items()) + hint)
        return
    cancel = verify.Cancel()
    with read_only_tree(tree.root):
        verifying = Verifying(target, progress)
        verifying.future = pool.submit(verify.run_imports, venue, tree.root, target, modules, None, None, cancel)
        try:
            yield verifying
        finally:
            cancel.set()  # a build that failed meanwhile stops the run; a finished one is unaffected
            try:
                verifying.future.exception()
            except BaseException:  # noqa: BLE001 - cancelled or interrupted: the tree goes anyway
                pass


def verifiable_now(cached: Manifest, target: Target, enabled: bool, verify_with: str | None) -> bool:
    """A cached build worth building again: one verified another way than --verify-with asks, or one that could
    not be verified when it was made and can be now."""
    if enabled and verify_with and cached.verification.get("how") != verify_with:
        return True
    if not enabled or cached.verified is not False:
        return False
    venue, _ = verify.find_venue(target, order(verify_with), pull=False, strict=False)
    return venue is not None


def verified_label(manifest: Manifest) -> str:
    """One word or so for the build's result line: how the layer was verified, or that it was not."""
    if manifest.verified:
        return f"verified ({manifest.verification.get('how', '?')}, Python {manifest.verification.get('python', '?')})"
    if manifest.verified is False:
        return f"NOT verified ({manifest.verification.get('reason', 'no reason recorded')})"
    return "not verified (built before verification existed)"
