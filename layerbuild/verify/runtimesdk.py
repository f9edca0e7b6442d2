"""The Lambda runtime's own packages (boto3, botocore and what they need), installed once per runtime.

Every Lambda Python runtime ships the AWS SDK in its own site directory, after the layers on
sys.path: a handler that imports boto3 works without a layer, and a layer's own boto3 wins.
`test`, `invoke` and build verification reproduce that with a local interpreter by putting this
directory after the layer's entries. The versions come from the runtime matrix (runtimes.py); the
pins with their hashes are committed in layerbuild/data/runtime-sdk/pythonX.Y.txt (`relock()`
writes them) and installed with hash checking into the cache, one directory per lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from layerbuild.backends.indexes import IndexSettings
from layerbuild.backends.wheels.uv import compile_lock, install_lock
from layerbuild.cache.builds import cache_root
from layerbuild.cache.prune import RUNTIME_SDK_MARKER, runtime_sdk_root
from layerbuild.errors import LayerbuildError, ResolveError
from layerbuild.model.runtimes import RUNTIMES, Runtime, Target

LOCK_DIR = Path(__file__).resolve().parent / "data" / "runtime-sdk"
MARKER = RUNTIME_SDK_MARKER


class RuntimeSdkError(LayerbuildError):
    """The runtime's own packages could not be installed."""


def lock_path(runtime: Runtime) -> Path:
    return LOCK_DIR / f"{runtime.name}.txt"


def lock_text(runtime: Runtime) -> str:
    try:
        return lock_path(runtime).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeSdkError(f"{lock_path(runtime)}: cannot read the {runtime.name} SDK lock: {exc.strerror or exc}") from None


def install_dir(runtime: Runtime, root: Path | None = None) -> Path:
    """Where this runtime's lock is (or will be) installed: one directory per lock content."""
    digest = hashlib.sha256(lock_text(runtime).encode("utf-8")).hexdigest()[:16]
    return runtime_sdk_root(root or cache_root()) / f"{runtime.name}-{digest}"


def installed(runtime: Runtime, root: Path | None = None) -> Path | None:
    """The site directory holding the runtime's packages, when a complete install is there (marked as used now,
    for the cache's least-recently-used pruning)."""
    folder = install_dir(runtime, root)
    if not ((folder / MARKER).is_file() and (folder / "site").is_dir()):
        return None
    try:
        os.utime(folder / MARKER)
    except OSError:
        pass  # a read-only cache still serves
    return folder / "site"


def ensure(runtime: Runtime, index: IndexSettings | None = None, root: Path | None = None) -> Path:
    """The runtime's packages, installed now if need be (hashes checked); atomic, safe to race."""
    found = installed(runtime, root)
    if found is not None:
        return found
    final = install_dir(runtime, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{os.getpid()}.{runtime.name}.", dir=final.parent))  # pid: see cacheprune
    try:
        (staging / "lock.txt").write_text(lock_text(runtime), encoding="utf-8")
        try:
            # Pure-Python wheels: the architecture does not change what is installed.
            install_lock(staging / "lock.txt", Target(runtime, "x86_64"), index or IndexSettings.from_environment(),
                         staging / "site", [])
        except ResolveError as exc:
            raise RuntimeSdkError(f"cannot install the {runtime.name} runtime's own packages ({lock_path(runtime).name}): "
                                  f"{exc}") from None  # fmt: skip
        shutil.rmtree(staging / "site" / "bin", ignore_errors=True)  # console scripts: never run from here
        size = sum(f.stat().st_size for f in (staging / "site").rglob("*") if f.is_file())
        (staging / MARKER).write_text(json.dumps({"runtime": runtime.name, "bytes": size}), encoding="utf-8")
        try:
            os.rename(staging, final)
        except OSError:
            if installed(runtime, root) is None:  # not a concurrent install that won: a real failure
                raise
    except OSError as exc:
        raise RuntimeSdkError(f"cannot install the {runtime.name} runtime's own packages into {final.parent}: "
                              f"{exc.strerror or exc}") from None  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    found = installed(runtime, root)
    assert found is not None
    return found


def relock(work_dir: Path) -> list[Path]:
    """Maintainers: resolve every runtime's SDK pins with hashes into layerbuild/data/runtime-sdk/."""
    written = []
    for runtime in RUNTIMES.values():
        if runtime.sdk is None:
            continue
        result = compile_lock(runtime.sdk.requirements(), Target(runtime, "x86_64"), IndexSettings(), work_dir / runtime.name)
        header = (f"# The {runtime.name} runtime's own packages: {' '.join(runtime.sdk.requirements())}\n"
                  f"# Versions: {runtime.sdk.source}. Written by layerbuild.verify.runtimesdk.relock().\n")  # fmt: skip
        path = lock_path(runtime)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + result.text, encoding="utf-8")
        written.append(path)
    return written


def shipped_versions() -> dict[str, dict[str, str]]:
    """Runtime name -> {import name: version} of the packages it ships, from the committed locks."""
    from packaging.utils import canonicalize_name

    from layerbuild.model.lockfile import parse_lock
    from layerbuild.model.runtimes import RUNTIME_MODULES, RUNTIME_PACKAGES

    modules: dict[str, str] = {canonicalize_name(d): m for m, d in zip(RUNTIME_MODULES, RUNTIME_PACKAGES)}
    found = {}
    for runtime in RUNTIMES.values():
        if runtime.sdk is not None and lock_path(runtime).is_file():
            pins = parse_lock(lock_text(runtime)).pins
            found[runtime.name] = {modules[name]: version for name, version in pins.items() if name in modules}
    return found
