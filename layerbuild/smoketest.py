"""`layerbuild test`: import every top-level module of a layer in its target runtime.

Where: the Lambda runtime image through Docker when an engine answers, else a local interpreter of
the same version and architecture, else CannotTestError (exit status 3). Either way the layer is
extracted read-only into a private directory and a fresh interpreter (-I -S: no user or host
site-packages) sees exactly Lambda's layer entries on sys.path and the layer's lib/ on
LD_LIBRARY_PATH. The import runner (_import_runner.py) prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import _import_runner
from .distinfo import top_level_modules
from .errors import LayerbuildError, RecipeError
from .interpreters import find_local_python
from .layerfacts import manifest_beside
from .optdir import layers_extracted, read_only_command
from .runtimes import Target

RUNNER_SOURCE = Path(_import_runner.__file__).read_text(encoding="utf-8")
DEFAULT_TIMEOUT = 120.0
MODES = ("auto", "docker", "local")


class CannotTestError(LayerbuildError):
    """Neither a Docker engine nor a local interpreter can run this target."""

    exit_code = 3


@dataclass(frozen=True)
class ModuleResult:
    module: str
    ok: bool
    ms: float
    error: str | None = None


@dataclass
class SmokeReport:
    zip: str
    target: str
    where: str  # "docker IMAGE" | "local /path/to/python3.11"
    modules_from: str  # "--import" | "recipe NAME" | "dist-info metadata"
    read_only: bool
    results: list[ModuleResult]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# ---- pure parts -------------------------------------------------------------------------------


def site_dirs(root: Path, python: str) -> list[Path]:
    """Lambda's two layer entries on sys.path, site-packages first."""
    return [root / "python" / "lib" / f"python{python}" / "site-packages", root / "python"]


def modules_from_metadata(root: Path, python: str) -> list[str]:
    names: list[str] = []
    for site in site_dirs(root, python):
        if site.is_dir():
            names += [n for n in top_level_modules(site) if n not in names]
    return names


def parse_runner_output(output: str, where: str, exit_status: int | None = None) -> dict:
    """The runner's JSON line out of everything the interpreter printed."""
    importing = None
    for line in output.splitlines():
        if line.startswith(_import_runner.MARKER):
            try:
                return json.loads(line[len(_import_runner.MARKER):])
            except ValueError:
                break
        if line.startswith(_import_runner.IMPORTING):
            importing = line[len(_import_runner.IMPORTING):]
    lines = [ln for ln in output.splitlines() if not ln.startswith(_import_runner.IMPORTING)]
    tail = " ".join(" ".join(lines).split())[-300:] or "no output"
    status = f"exit status {exit_status}" if exit_status is None or exit_status >= 0 else f"signal {-exit_status}"
    if importing:
        raise LayerbuildError(f"importing {importing} ended the interpreter in {where} ({status}) before it could report: {tail}")
    raise LayerbuildError(f"the import runner in {where} did not report ({status}; is it a Python interpreter?): {tail}")


def render(report: SmokeReport) -> str:
    lines = [f"{report.zip}: import test for {report.target} in {report.where} "
             f"(modules from {report.modules_from}; layer read-only: {'yes' if report.read_only else 'NO'})"]  # fmt: skip
    width = max((len(r.module) for r in report.results), default=6)
    for r in report.results:
        status = "ok  " if r.ok else "FAIL"
        lines.append(f"  {status} {r.module:<{width}} {r.ms:9.1f} ms" + (f"  {r.error}" if r.error else ""))
    lines += [f"  note: {n}" for n in report.notes]
    failed = [r.module for r in report.results if not r.ok]
    lines.append(f"{len(report.results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


# ---- choosing modules -----------------------------------------------------------------------


def recipe_imports(zip_path: Path) -> tuple[list[str], str] | None:
    """The `imports:` of the recipe named by the manifest beside the zip, if any."""
    manifest = manifest_beside(zip_path)
    if manifest is None:
        return None
    from .recipe import load_recipe

    try:
        recipe = load_recipe(manifest.name)
    except RecipeError:
        return None
    return (list(recipe.imports), f"recipe {recipe.name}") if recipe.imports else None


def choose_modules(zip_path: Path, root: Path, target: Target, explicit) -> tuple[list[str], str]:
    if explicit:
        return list(dict.fromkeys(explicit)), "--import"
    from_recipe = recipe_imports(zip_path)
    if from_recipe:
        return from_recipe
    names = modules_from_metadata(root, target.python)
    if not names:
        raise LayerbuildError(f"{zip_path}: no importable modules found (no *.dist-info under python/); name them with --import MODULE")
    return names, "dist-info metadata"


# ---- running --------------------------------------------------------------------------------


def run_local(interpreter: Path, root: Path, modules: list[str], timeout: float) -> dict:
    env = {"PATH": f"{root}/bin:/usr/local/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": f"{root}/lib", "LANG": "C.UTF-8",
           "HOME": str(root.parent), "TZ": ":UTC"}  # fmt: skip
    argv = read_only_command(root, [str(interpreter), "-I", "-S", "-B", "-c", RUNNER_SOURCE, str(root), *modules])
    where = f"local {interpreter}"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=root.parent)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise LayerbuildError(f"importing {', '.join(modules)} with {interpreter} did not finish within {timeout:g}s and was stopped") from None
    return parse_runner_output(done.stdout + "\n" + done.stderr, where, done.returncode)


def smoke_test(zip_path: Path, target: Target, imports=(), mode: str = "auto", image: str | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> SmokeReport:  # fmt: skip
    zip_path = Path(zip_path)
    notes: list[str] = []
    engine = None
    reference = runtime_image(target, image)
    if mode in ("auto", "docker"):
        from . import smoketest_docker

        engine, why_not = smoketest_docker.connect(required=mode == "docker")
        if engine is not None:
            why_not = smoketest_docker.image_ready(engine, reference, target, required=mode == "docker")
            engine = None if why_not else engine
        if engine is None:
            notes.append(f"not in Docker: {why_not}")
    interpreter = None
    if engine is None:
        found = find_local_python(target.python, target.arch) if mode != "docker" else None
        if found is None:
            raise CannotTestError(
                f"cannot test {zip_path} for {target.slug}: "
                + (f"{notes[0][len('not in Docker: '):]}, and " if notes else "")
                + f"no local python{target.python} for {target.machine} was found on PATH; start Docker with the runtime "
                f"image {reference} (or set --image) or install Python {target.python}"
            )
        interpreter = found.executable
    with layers_extracted([zip_path], prefix="layerbuild-test-") as root:
        modules, source = choose_modules(zip_path, root, target, imports)
        if engine is not None:
            from . import smoketest_docker

            data = smoketest_docker.run_imports(engine, reference, target, root, RUNNER_SOURCE, modules, timeout)
            where = f"docker {reference}"
        else:
            data = run_local(interpreter, root, modules, timeout)
            where = f"local {interpreter}"
    if data.get("python") != target.python:
        raise CannotTestError(f"{where} runs Python {data.get('python')}, but {zip_path} targets {target.slug}; "
                              f"choose an image or interpreter of Python {target.python}")  # fmt: skip
    if data.get("machine") and data["machine"] != target.machine:
        raise CannotTestError(f"{where} runs on {data['machine']}, but {zip_path} targets {target.slug} ({target.machine}); "
                              f"choose an image or interpreter for {target.arch}")  # fmt: skip
    results = [ModuleResult(r["module"], bool(r["ok"]), float(r["ms"]), r.get("error")) for r in data["results"]]
    if not data.get("read_only"):
        notes.append("the layer directory was writable in the test (Lambda's /opt is not)")
    return SmokeReport(str(zip_path), target.slug, where, source, bool(data.get("read_only")), results, notes)


def runtime_image(target: Target, image: str | None) -> str:
    return image or os.environ.get("LAYERBUILD_RUNTIME_IMAGE") or target.runtime.runtime_image(target.arch)
