"""Import a layer as Lambda would: in a fresh interpreter of the target Python that sees only the layer.

Used by every build (the tree, once final) and by `layerbuild test` (an extracted zip). The import
runner (_import_runner.py) gets Lambda's two layer entries first on sys.path, then the runtime's own
packages (boto3 and what it needs), `-I -S -B` (no site-packages of the host, no user site, no
bytecode written), `/opt/lib` on LD_LIBRARY_PATH, and the layer read-only.

Where it runs (a Venue):
- local:  an interpreter of the target version on this machine's architecture (pythonX.Y on PATH or pyenv);
- qemu:   another architecture's interpreter from a sysroot (LAYERBUILD_SYSROOT_ARM64 or _X86_64, e.g.
          Debian's python3.11 packages unpacked by tests/images/arm64-sysroot.sh) run by qemu-user (qemu-aarch64-static);
- docker: the Lambda runtime image through a Docker engine, the layer bind-mounted read-only at /opt.
With a local interpreter or QEMU, the runtime's own packages come from runtimesdk (installed once, and
only when the layer imports one of them without shipping it); in the runtime image they are its own.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from layerbuild.backends.distinfo import MAX_MODULE_NAME, top_level_modules
from layerbuild.errors import LayerbuildError
from layerbuild.model.runtimes import MACHINE, RUNTIME_MODULES, Target
from layerbuild.util import safetext
from layerbuild.verify import _import_runner
from layerbuild.verify.interpreters import find_local_python, probe
from layerbuild.verify.optdir import read_only_command
from layerbuild.verify.runtimesdk import RuntimeSdkError

__all__ = ["RuntimeSdkError"]  # what verification's callers catch as "the machine's limits"

RUNNER_SOURCE = Path(_import_runner.__file__).read_text(encoding="utf-8")
VENUES = ("local", "qemu", "docker")
BUILD_ORDER = ("local", "qemu", "docker")  # a build: the quickest way that imports for real
TEST_ORDER = ("docker", "local", "qemu")  # `layerbuild test`: the real runtime image first
DEFAULT_TIMEOUT = 300.0
TIMEOUT_ENV = "LAYERBUILD_VERIFY_TIMEOUT"
SYSROOT_ENV = {"arm64": "LAYERBUILD_SYSROOT_ARM64", "x86_64": "LAYERBUILD_SYSROOT_X86_64"}
NATIVE = "the target's architecture is this machine's: no emulation needed (a local interpreter runs it)"
QEMU = {"aarch64": ("qemu-aarch64-static", "qemu-aarch64"), "x86_64": ("qemu-x86_64-static", "qemu-x86_64")}


class CannotTestError(LayerbuildError):
    """Neither a local interpreter, QEMU nor a Docker engine can run this target here."""

    exit_code = 3


class VerifyError(LayerbuildError):
    """A module of the layer does not import on its runtime."""


class SlimmingSuspect(VerifyError):
    """An import failed in a layer that slimming removed files from: the build tries again without removals."""

    def __init__(self, message: str, run: "ImportRun | None", removed: list[str]):
        super().__init__(message)
        self.run = run
        self.removed = removed

    def explain(self) -> str:
        """Which removal broke which import, as far as the errors name a removed module or file."""
        if self.run is None:  # the interpreter died or hung: nothing names a file
            return self.message
        removed = set(self.removed)
        culprits = []
        for failure in self.run.failures:
            named = removed_file_for(failure, removed)
            culprits.append(f"import {failure.module} failed ({failure.error})" + (f": slimming removed {named}" if named else ""))
        return "; ".join(culprits)


def removed_file_for(failure: "ModuleResult", removed: set[str]) -> str | None:
    if failure.missing_module:
        base = "python/" + failure.missing_module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in removed:
                return candidate
    if failure.missing_file:
        for path in sorted(removed):
            if failure.missing_file.endswith("/" + path.split("/", 1)[-1]):
                return path
    return None


@dataclass(frozen=True)
class Venue:
    kind: str  # local | qemu | docker
    where: str  # for people: "local /usr/bin/python3.11", "qemu-aarch64-static /srv/arm64/usr/bin/python3.11", "docker IMAGE"
    command: tuple[str, ...] = ()  # local and qemu: the interpreter to run (with qemu and its -L SYSROOT before it)
    image: str | None = None  # docker


@dataclass(frozen=True)
class ModuleResult:
    module: str
    ok: bool
    ms: float
    error: str | None = None
    missing_module: str | None = None  # what an ImportError names
    missing_file: str | None = None  # what an OSError names


@dataclass
class ImportRun:
    """What one interpreter reported."""

    venue: Venue
    python: str  # "3.12.1"
    machine: str
    read_only: bool
    results: list[ModuleResult]
    runtime_packages: str | None = None  # where the runtime's own packages came from, when they were on sys.path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failures(self) -> list[ModuleResult]:
        return [r for r in self.results if not r.ok]

    def record(self) -> dict:
        """What the manifest keeps of a verification."""
        return {"how": self.venue.kind, "where": self.venue.where, "python": self.python, "machine": self.machine,
                "modules": [r.module for r in self.results], "seconds": round(self.seconds, 2),
                "runtime_packages": self.runtime_packages, "read_only": self.read_only}  # fmt: skip


# ---- pure parts -------------------------------------------------------------------------------


def site_dirs(root: Path, python: str) -> list[Path]:
    """Lambda's two layer entries on sys.path, site-packages first."""
    return [root / "python" / "lib" / f"python{python}" / "site-packages", root / "python"]


def modules_from_metadata(root: Path, python: str) -> list[str]:
    """The top-level modules the layer's distributions name; when none names one it can be found by (no
    dist-info left, or a top_level.txt naming nothing real), the public packages and modules on disk."""
    names: list[str] = []
    for site in site_dirs(root, python):
        if site.is_dir():
            names += [n for n in top_level_modules(site) if n not in names]
    if not names:
        for site in site_dirs(root, python):
            if site.is_dir():
                names += [n for n in modules_on_disk(site) if n not in names]
    return names


def modules_on_disk(site: Path) -> list[str]:
    """Pure listing: public top-level packages (a directory with __init__.py) and modules (.py, extension
    modules) of a site directory; private names and the layer's own site-packages path are left out."""
    found = set()
    for entry in site.iterdir():
        name = entry.name.split(".", 1)[0]
        if not name.isidentifier() or name.startswith("_") or len(name) > MAX_MODULE_NAME:
            continue
        if entry.is_dir() and "." not in entry.name and (entry / "__init__.py").is_file():
            found.add(name)
        elif entry.is_file() and (entry.name.endswith(".py") and entry.name.count(".") == 1 or entry.name.endswith(".so")):
            found.add(name)
    return sorted(found)


def modules_to_verify(root: Path, python: str, imports=()) -> list[str]:
    """Every top-level module of the layer's distributions, then the recipe's imports: (submodules that
    matter, such as pydantic_core._pydantic_core)."""
    return list(dict.fromkeys([*modules_from_metadata(root, python), *imports]))


def parse_runner_output(output: str, where: str, exit_status: int | None = None) -> dict:
    """The runner's JSON line out of everything the interpreter printed."""
    importing = None
    for line in output.splitlines():
        if line.startswith(_import_runner.MARKER):
            try:  # the layer's own code prints here too: a forged line may be nested past any parser's depth
                found = safetext.loads(line[len(_import_runner.MARKER):])
            except ValueError:
                break
            if isinstance(found, dict):
                return found
            break
        if line.startswith(_import_runner.IMPORTING):
            importing = line[len(_import_runner.IMPORTING):]
    lines = [ln for ln in output.splitlines() if not ln.startswith(_import_runner.IMPORTING)]
    tail = " ".join(" ".join(lines).split())[-300:] or "no output"
    status = f"exit status {exit_status}" if exit_status is None or exit_status >= 0 else f"signal {-exit_status}"
    if importing:
        raise LayerbuildError(f"importing {importing} ended the interpreter in {where} ({status}) before it could report: {tail}")
    raise LayerbuildError(f"the import runner in {where} did not report ({status}; is it a Python interpreter?): {tail}")


def runner_config(root: str, modules: list[str], after: list[str]) -> str:
    return json.dumps({"root": root, "modules": modules, "after": after, "provided": list(RUNTIME_MODULES)})


def failure_line(failures: list[ModuleResult], where: str) -> str:
    first = failures[0]
    more = f" (and {len(failures) - 1} more: {', '.join(f.module for f in failures[1:])})" if len(failures) > 1 else ""
    return f"import {first.module} fails in {where}: {first.error}{more}"


def timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT))
    except ValueError:
        raise LayerbuildError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected a number of seconds") from None


# ---- where ------------------------------------------------------------------------------------


def local_venue(target: Target) -> Venue | None:
    found = find_local_python(target.python, target.arch)
    return Venue("local", f"local {found.executable}", (str(found.executable),)) if found else None


def qemu_venue(target: Target) -> tuple[Venue | None, str]:
    """An interpreter of the target's version and architecture from a sysroot, run by qemu-user."""
    host = platform.machine()
    if MACHINE[target.arch] == host:
        return None, NATIVE
    env = SYSROOT_ENV[target.arch]
    sysroot = os.environ.get(env)
    if not sysroot:
        how = "; tests/images/arm64-sysroot.sh makes one on Debian" if target.arch == "arm64" else ""
        return None, f"no {target.arch} sysroot ({env} unset{how})"
    qemu = next((found for name in QEMU[MACHINE[target.arch]] if (found := shutil.which(name))), None)
    if qemu is None:
        return None, f"no {QEMU[MACHINE[target.arch]][0]} on PATH (Debian's qemu-user-static)"
    python = Path(sysroot) / "usr" / "bin" / f"python{target.python}"
    if not python.is_file():
        return None, f"{env}={sysroot} has no usr/bin/python{target.python}"
    command = (qemu, "-L", sysroot, str(python))
    if probe_command(command) != (target.python, MACHINE[target.arch]):
        return None, f"{' '.join(command)} does not run as Python {target.python} on {MACHINE[target.arch]}"
    return Venue("qemu", f"{Path(qemu).name} {python}", command), ""


@lru_cache(maxsize=16)
def probe_command(command: tuple[str, ...]) -> tuple[str, str] | None:
    """(X.Y, machine) an interpreter command reports, or None; once per process (under QEMU it takes a second)."""
    found = probe(list(command))
    return (found.python, found.machine) if found else None


def docker_venue(target: Target, image: str | None, required: bool, pull: bool) -> tuple[Venue | None, str]:
    from layerbuild.verify import docker_runner as smoketest_docker

    engine, why_not = smoketest_docker.connect(required=required)
    if engine is None:
        return None, why_not or "no Docker engine"
    reference = runtime_image(target, image)
    why_not = smoketest_docker.image_ready(engine, reference, target, required=required, pull=pull)
    return (None, why_not) if why_not else (Venue("docker", f"docker {reference}", image=reference), "")


def runtime_image(target: Target, image: str | None = None) -> str:
    return image or os.environ.get("LAYERBUILD_RUNTIME_IMAGE") or target.runtime.runtime_image(target.arch)


def find_venue(target: Target, order=BUILD_ORDER, image: str | None = None, pull: bool = True,
               strict: bool = True) -> tuple[Venue | None, dict[str, str]]:  # fmt: skip
    """The first way to run the target's Python here, in order; else None and why each way was not possible.
    pull: whether a runtime image missing from the engine may be pulled (a build does not pull); strict: when
    Docker is the only way asked for, its absence is an error rather than a reason."""
    why: dict[str, str] = {}
    for kind in order:
        venue: Venue | None = None
        if kind == "local":
            venue = local_venue(target)
            reason = f"no local python{target.python} for {target.machine} was found on PATH"
        elif kind == "qemu":
            venue, reason = qemu_venue(target)
        else:
            venue, reason = docker_venue(target, image, required=strict and tuple(order) == ("docker",), pull=pull)
        if venue is not None:
            return venue, why
        if reason != NATIVE or len(order) == 1:
            why[kind] = reason
    return None, why


# ---- running ----------------------------------------------------------------------------------


class Cancel:
    """Stops an import run from another thread (a build that failed meanwhile)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.cancelled = False

    def register(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._process = process
            if self.cancelled:
                _kill(process)

    def set(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._process is not None:
                _kill(self._process)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_imports(venue: Venue, root: Path, target: Target, modules: list[str], limit: float | None = None,
                runtime_site: Path | None = None, cancel: Cancel | None = None, label: str = "the layer") -> ImportRun:  # fmt: skip
    """Import modules from the /opt-like root (read-only by now) with the venue's interpreter; one process.

    The runtime's own packages: the image's, in Docker; otherwise runtime_site when given, else none at
    first and, when the layer imports one of them without shipping it, installed and run once more."""
    from layerbuild.verify import runtimesdk

    limit = limit or timeout()
    started = time.monotonic()
    after = list(target.runtime.package_dirs) if venue.kind == "docker" else ([str(runtime_site)] if runtime_site else [])
    data = _run(venue, root, target, modules, after, limit, cancel)
    used = "the runtime image's" if venue.kind == "docker" else None
    if venue.kind != "docker":
        if runtime_site is None and data.get("runtime_wanted"):
            runtime_site = runtimesdk.ensure(target.runtime)
            data = _run(venue, root, target, modules, [str(runtime_site)], limit, cancel)
        if runtime_site is not None and target.runtime.sdk:
            used = f"boto3 {target.runtime.sdk.boto3}, botocore {target.runtime.sdk.botocore} ({runtime_site})"
    version = str(data.get("version") or data.get("python"))
    if data.get("python") != target.python:
        raise CannotTestError(f"{venue.where} runs Python {data.get('python')}, but {label} targets {target.slug}; "
                              f"choose an image or interpreter of Python {target.python}")  # fmt: skip
    if data.get("machine") and data["machine"] != target.machine:
        raise CannotTestError(f"{venue.where} runs on {data['machine']}, but {label} targets {target.slug} ({target.machine}); "
                              f"choose an image or interpreter for {target.arch}")  # fmt: skip
    results = [ModuleResult(r["module"], bool(r["ok"]), float(r["ms"]), r.get("error"), r.get("missing_module"),
                            r.get("missing_file")) for r in data["results"]]  # fmt: skip
    run = ImportRun(venue, version, str(data.get("machine")), bool(data.get("read_only")), results, used,
                    time.monotonic() - started)  # fmt: skip
    if not run.read_only:
        run.notes.append("the layer directory was writable in the test (Lambda's /opt is not)")
    return run


def _run(venue: Venue, root: Path, target: Target, modules: list[str], after: list[str], limit: float,
         cancel: Cancel | None) -> dict:  # fmt: skip
    if venue.kind == "docker":
        from layerbuild.verify import docker_runner as smoketest_docker

        assert venue.image is not None
        return smoketest_docker.run_imports(venue.image, target, root, RUNNER_SOURCE, modules, after, limit)
    env = {"PATH": f"{root}/bin:/usr/local/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": f"{root}/lib", "LANG": "C.UTF-8",
           "HOME": str(root.parent), "TZ": ":UTC", "MPLBACKEND": "Agg"}  # fmt: skip
    argv = read_only_command(root, [*venue.command, "-I", "-S", "-B", "-c", RUNNER_SOURCE,
                                    runner_config(str(root), modules, after)])  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, cwd=root.parent, start_new_session=True)  # fmt: skip
    if cancel is not None:
        cancel.register(process)
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill(process)
        process.communicate()
        raise LayerbuildError(f"importing {', '.join(modules)} with {venue.where} did not finish within {limit:g}s "
                              f"and was stopped") from None  # fmt: skip
    finally:
        _kill(process)
    if cancel is not None and cancel.cancelled:
        raise LayerbuildError("the import run was stopped")
    return parse_runner_output(output.decode("utf-8", errors="replace"), venue.where, process.returncode)
