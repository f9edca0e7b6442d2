"""Bytecode for cold starts: compile .pyc for the *target* Python into the layer tree.

Lambda extracts layers into a read-only /opt, so the runtime cannot write __pycache__: whatever a
layer does not ship compiled is recompiled on every cold start. We compile with the unchecked-hash
invalidation mode (PEP 552): the .pyc is valid whatever timestamps extraction gives, and its bytes
depend only on the source, so rebuilds stay byte-identical. co_filename is rooted at /opt/python
(compileall -d), never at the build host's scratch directory.

Bytecode is only valid for the interpreter minor version that wrote it, so a matching interpreter
must be found (the running one, pythonX.Y on PATH, or a pyenv install); without one the target
gets no bytecode and the build says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import wait
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from layerbuild.cache import bytecode as pyccache
from layerbuild.verify.interpreters import pyenv_installs, pyenv_root
from layerbuild.util.records import list_compiled
from layerbuild.util.tree import walk_tree
from layerbuild.util.threadpool import ThreadPool
from layerbuild.util.zipwriter import RawSource

MODES = ("alongside", "only", "none")
# Where Lambda extracts layers: python/ is /opt/python on the function's sys.path.
LAMBDA_LAYER_ROOT = "/opt"
COMPILE_TIMEOUT = 900
_VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.implementation.cache_tag)"


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # "3.12"
    cache_tag: str  # "cpython-312"


@dataclass
class BytecodeResult:
    mode: str
    compiled: int = 0  # .pyc files in the layer after the step
    failed: list[str] | None = None  # sources that did not compile (kept as source)
    note: str = ""  # one line for the user and the manifest; says why when nothing was compiled
    # .pyc path under site -> its deflated form (made for the bytecode cache), for the zip writer to copy
    raw_sources: dict[str, RawSource] = field(default_factory=dict)


def _probe(executable: str) -> Interpreter | None:
    """Ask an interpreter its version; a pyenv shim for a version not selected fails: absent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    try:
        proc = subprocess.run([executable, "-I", "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        return None
    return Interpreter(executable, lines[0], lines[1])


@lru_cache(maxsize=32)
def find_interpreter(version: str) -> Interpreter | None:
    """A local interpreter of the target's major.minor version, or None."""
    if "%d.%d" % sys.version_info[:2] == version:
        return Interpreter(sys.executable, version, sys.implementation.cache_tag)
    on_path = shutil.which(f"python{version}")
    # A pyenv shim fails for a version that is not selected; look in pyenv's versions directly instead.
    if on_path and Path(on_path).parent != pyenv_root() / "shims":
        found = _probe(on_path)
        if found and found.version == version:
            return found
    for exe in pyenv_installs(version):
        # versions/3.12.1/bin/python3.12 is CPython 3.12 by construction: no need to start it (~0.1 s).
        return Interpreter(exe, version, "cpython-" + version.replace(".", ""))
    return None


def interpreter_identity(version: str) -> str:
    """What the cache key records about the bytecode compiler: its cache tag, or 'none'."""
    found = find_interpreter(version)
    return found.cache_tag if found else "none"


def compile_command(python: str, site_dir: str, workers: int = 0) -> list[str]:
    """The compileall invocation; the docker backend may run it inside the build image.

    -d roots co_filename at /opt/python; PYTHONHASHSEED=0 must be set by the caller (frozenset
    constants are marshalled in hash order). Not `-I`: it implies -E, which ignores PYTHONHASHSEED
    (3.8-3.10 then write set constants in a random order); see ISOLATED.
    """
    return [python, *ISOLATED, "-c", _RUN_COMPILEALL, "-q", "-j", str(workers), "--invalidation-mode", "unchecked-hash",
            "-d", f"{LAMBDA_LAYER_ROOT}/python", site_dir]  # fmt: skip


def _chunks(files: list[Path], count: int) -> list[list[Path]]:
    """Split files into count lists of about equal total size (largest first, greedy)."""
    buckets: list[tuple[int, list[Path]]] = [(0, []) for _ in range(count)]
    sizes = {path: path.stat().st_size for path in files}
    for path in sorted(files, key=lambda p: (-sizes[p], str(p))):
        size, members = min(buckets, key=lambda b: b[0])
        buckets[buckets.index((size, members))] = (size + sizes[path], members + [path])
    return [members for _, members in buckets if members]


def _run_compileall(interpreter: Interpreter, site: Path, workers: int,
                    starting: Callable[[], None]) -> tuple[str, dict[Path, RawSource]]:  # fmt: skip
    """Compile every module below site, reusing bytecode cached by earlier builds (pyccache).

    Returns compileall's output and {.pyc path: its deflated form} from the bytecode cache.

    On 3.9+ the modules left to compile go to one process per core as balanced file lists, each
    module compiled as `python -m compileall -s SITE -p /opt/python` would (-s/-p give each file the
    same /opt/python path and the same bytes whichever process compiles it). Each .pyc is deflated
    and cached as soon as its process reports it, while the others compile. 3.8's compileall cannot
    root a file list's paths (-s/-p are 3.9+), so it compiles the whole directory, uncached.
    """
    major, minor = (int(x) for x in interpreter.version.split("."))
    if (major, minor) < (3, 9):
        starting()
        proc = subprocess.run(compile_command(interpreter.executable, str(site), 1), capture_output=True, text=True,
                              env=compile_env(), timeout=COMPILE_TIMEOUT)  # fmt: skip
        return proc.stdout, {}
    files = [Path(e.path) for e in walk_tree(site) if e.rel.endswith(".py") and e.is_file and "__pycache__" not in e.rel.split("/")]
    identity = pyccache.interpreter_identity(interpreter.executable, interpreter.cache_tag)
    keys: dict[Path, str] = {}
    raws: dict[Path, RawSource] = {}
    if identity and pyccache.enabled():
        files, keys, raws = pyccache.restore(files, site, identity, interpreter.cache_tag, f"{LAMBDA_LAYER_ROOT}/python")
    count = workers or max(1, min(4, os.cpu_count() or 1))
    if files:  # with nothing to compile, other threads would only slow the file work that follows
        starting()
    stored: list[tuple[Path, RawSource | None] | None] = []
    with pyccache.PackWriter(interpreter.cache_tag) as pack:

        def compiled(source: Path) -> None:  # on the thread that reads that compiler's output
            if source in keys:
                stored.append(pack.add(source, keys[source]))

        output = _compile_files(interpreter, site, files, count if len(files) >= 100 else 1, compiled if keys else None)
        pack.finish()  # one file for all of them
    return output, {**raws, **{path: raw for path, raw in (r for r in stored if r) if raw is not None}}


# Each listed module compiled by compileall.compile_file with exactly the arguments that
# `python -m compileall -q --invalidation-mode unchecked-hash -s SITE -p PREFIX -i -` passes, then a
# line that names it, so that its .pyc can be taken while the rest compile.
_COMPILED = "\0compiled "
_WORKER = f"""
import sys; del sys.path[0]
import compileall, os, py_compile
site, prefix = sys.argv[1], sys.argv[2]
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for line in sys.stdin:
    path = line.strip()
    if path and os.path.isfile(path):
        compileall.compile_file(path, None, False, None, 1, False, invalidation_mode=mode, stripdir=site,
                                prependdir=prefix, optimize=[-1], limit_sl_dest=None, hardlink_dupes=False)
        print({_COMPILED!r} + path, flush=True)
"""


def _compile_files(interpreter: Interpreter, site: Path, files: list[Path], count: int,
                   compiled: Callable[[Path], None] | None = None) -> str:  # fmt: skip
    """Compile files on `count` processes; compiled(source) is called as each module is done."""
    if not files:
        return ""
    command = [interpreter.executable, *ISOLATED, "-c", _WORKER, str(site), f"{LAMBDA_LAYER_ROOT}/python"]
    procs: list[subprocess.Popen] = []
    try:
        chunks = _chunks(files, count)
        for _ in chunks:
            procs.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True, env=compile_env()))  # fmt: skip
        with ThreadPool(max_workers=2 * len(procs)) as io:
            try:
                for proc, chunk in zip(procs, chunks):
                    io.submit(_feed, proc, "".join(f"{path}\n" for path in chunk))
                drained = [io.submit(_drain, proc, compiled) for proc in procs]
                if wait(drained, timeout=COMPILE_TIMEOUT).not_done:
                    raise subprocess.TimeoutExpired(command[:3], COMPILE_TIMEOUT)
                return "".join(future.result() for future in drained)
            except BaseException:  # Ctrl-C or a timeout: stop the compilers, so the readers see their output end
                for proc in procs:
                    proc.kill()
                raise
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _feed(proc: subprocess.Popen, text: str) -> None:
    try:
        proc.stdin.write(text)
        proc.stdin.close()
    except OSError:  # BrokenPipeError included
        pass  # the process died: its output says what it managed


def _drain(proc: subprocess.Popen, compiled: Callable[[Path], None] | None) -> str:
    """compileall's own output of one process (error lines), reporting each compiled module on the way."""
    output = []
    for line in proc.stdout:
        if line.startswith(_COMPILED):
            if compiled:
                compiled(Path(line[len(_COMPILED):].rstrip("\n")))
        else:
            output.append(line)
    return "".join(output)


# The compilers' isolation without -I (whose -E would drop PYTHONHASHSEED): no site (-S) or user site
# (-s), PYTHON* variables removed by compile_env, and the -c script's first act drops sys.path[0] (the
# working directory) so that nothing beside it can stand in for compileall or py_compile.
ISOLATED = ("-S", "-s")
_RUN_COMPILEALL = "import sys; del sys.path[0]; import runpy; runpy.run_module('compileall', run_name='__main__', alter_sys=True)"


def compile_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"  # deterministic marshal of set/frozenset constants
    return env


_ERROR_LINE = re.compile(r"^\*\*\* Error compiling '(.+)'")


def compile_tree(site: Path, target_python: str, mode: str = "alongside", workers: int = 0,
                 while_compiling: Callable[[], None] | None = None) -> BytecodeResult:  # fmt: skip
    """Compile every .py below site (python/) for the target; rewrite RECORDs to list the .pyc files.

    while_compiling, if given, is called once: when the compiler processes start (so that Python
    work on other threads does not slow the restore of cached bytecode), or on the way out.
    """
    started = []

    def starting() -> None:
        if while_compiling and not started:
            started.append(True)
            while_compiling()

    try:
        return _compile_tree(site, target_python, mode, workers, starting)
    finally:
        starting()


def _compile_tree(site: Path, target_python: str, mode: str, workers: int, starting: Callable[[], None]) -> BytecodeResult:
    if mode not in MODES:
        raise ValueError(f"bytecode mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "none":
        return BytecodeResult(mode, note="bytecode: none (recipe asks for source only)")
    if not site.is_dir() or not any(site.rglob("*.py")):
        return BytecodeResult(mode, note="")
    interpreter = find_interpreter(target_python)
    if interpreter is None:
        return BytecodeResult(mode, note=(
            f"no bytecode: no local Python {target_python} interpreter to compile with (bytecode is only valid "
            f"for the version that wrote it); install python{target_python} (on PATH or with pyenv) to ship bytecode"))  # fmt: skip
    output, raws = _run_compileall(interpreter, site, workers, starting)
    failed = sorted({m.group(1) for line in output.splitlines() if (m := _ERROR_LINE.match(line))})
    failed = [_relative(f, site) for f in failed]
    pairs = compiled_pairs(site, interpreter.cache_tag)
    cached_form = {source: raws.get(site / pyc) for source, pyc in pairs}
    if mode == "only":
        pairs = _make_sourceless(site, pairs)
    list_compiled(site, pairs, replace_source=(mode == "only"))
    note = f"bytecode: {mode}, {len(pairs)} modules compiled with Python {interpreter.version} (unchecked-hash)"
    if failed:
        note += f"; {len(failed)} files did not compile and stay source only"
    deflated = {pyc: cached_form[source] for source, pyc in pairs if cached_form.get(source) is not None}
    return BytecodeResult(mode, len(pairs), failed, note, deflated)


def _relative(path: str, site: Path) -> str:
    for prefix in (f"{LAMBDA_LAYER_ROOT}/python/", str(site) + "/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def compiled_pairs(site: Path, cache_tag: str) -> list[tuple[str, str]]:
    """(source, pyc) paths relative to site for every .py that has a .pyc of this cache tag."""
    entries = walk_tree(site)
    files = {e.rel for e in entries if e.is_file}
    pairs = []
    suffix = f".{cache_tag}.pyc"
    for pyc in sorted(e.rel for e in entries if e.rel.endswith(suffix)):
        folder, _, name = pyc.rpartition("__pycache__/")
        source = f"{folder}{name[: -len(suffix)]}.py"
        if name and "/" not in name and (not folder or folder.endswith("/")) and source in files:
            pairs.append((source, pyc))
    return pairs


def _make_sourceless(site: Path, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Move __pycache__/X.cpython-3NN.pyc to X.pyc beside the source and delete X.py."""
    moved = []
    for source, pyc in pairs:
        dest = (site / source).with_suffix(".pyc")
        os.replace(site / pyc, dest)
        (site / source).unlink()
        moved.append((source, dest.relative_to(site).as_posix()))
    for cache_dir in sorted(site.rglob("__pycache__"), reverse=True):
        if cache_dir.is_dir() and not any(cache_dir.iterdir()):
            cache_dir.rmdir()
    return moved
