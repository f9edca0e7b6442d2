"""`layerbuild test`: import every top-level module of a layer zip in its target runtime.

Where: the Lambda runtime image through Docker when an engine answers and the image is there, else a
local interpreter of the same version and architecture, else one under QEMU (verify.py), else
CannotTestError (exit status 3). The layer is extracted read-only into a private directory and
imported as verify.run_imports imports a build's tree: Lambda's layer entries first on sys.path, then
the runtime's own packages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from layerbuild.audit.facts import manifest_beside
from layerbuild.errors import LayerbuildError, RecipeError
from layerbuild.model.runtimes import Target
from layerbuild.util.safetext import printable
from layerbuild.verify import venues as verify
from layerbuild.verify.optdir import layers_extracted
from layerbuild.verify.venues import CannotTestError, ModuleResult

DEFAULT_TIMEOUT = 120.0
MODES = ("auto", "docker", "local", "qemu")
__all__ = ["CannotTestError", "SmokeReport", "smoke_test", "render", "MODES", "DEFAULT_TIMEOUT"]


@dataclass
class SmokeReport:
    zip: str
    target: str
    where: str  # "docker IMAGE" | "local /path/to/python3.11" | "qemu-aarch64-static SYSROOT/usr/bin/python3.11"
    modules_from: str  # "--import" | "recipe NAME" | "dist-info metadata"
    read_only: bool
    results: list[ModuleResult]
    notes: list[str] = field(default_factory=list)
    runtime_packages: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def render(report: SmokeReport) -> str:
    # Module names come from the layer's metadata and errors from its code: printable() keeps escapes off the terminal.
    lines = [printable(f"{report.zip}: import test for {report.target} in {report.where} "
                       f"(modules from {report.modules_from}; layer read-only: {'yes' if report.read_only else 'NO'})")]  # fmt: skip
    modules = [printable(r.module) for r in report.results]
    width = max((len(m) for m in modules), default=6)
    for r, module in zip(report.results, modules):
        status = "ok  " if r.ok else "FAIL"
        lines.append(f"  {status} {module:<{width}} {r.ms:9.1f} ms" + (f"  {printable(r.error)}" if r.error else ""))
    if report.runtime_packages:
        lines.append(f"  runtime's own packages after the layer: {printable(report.runtime_packages)}")
    lines += [f"  note: {printable(n)}" for n in report.notes]
    failed = [printable(r.module) for r in report.results if not r.ok]
    lines.append(f"{len(report.results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def recipe_imports(zip_path: Path) -> tuple[list[str], str] | None:
    """The `imports:` of the recipe named by the manifest beside the zip, if any."""
    manifest = manifest_beside(zip_path)
    if manifest is None:
        return None
    from layerbuild.model.recipe import load_recipe

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
    names = verify.modules_from_metadata(root, target.python)
    if not names:
        at_root = sorted(p.name for p in root.iterdir() if p.name != "python" and ((p / "__init__.py").is_file()
                         or p.name.endswith((".dist-info", ".py"))))  # fmt: skip
        if at_root:
            raise LayerbuildError(f"{zip_path}: Python code at the zip root ({', '.join(at_root)}), where Lambda never "
                                  f"imports from; put packages under python/ (layerbuild audit says more)")  # fmt: skip
        raise LayerbuildError(f"{zip_path}: no importable modules found (no package or module under python/); name them with --import MODULE")
    return names, "dist-info metadata"


def smoke_test(zip_path: Path, target: Target, imports=(), mode: str = "auto", image: str | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> SmokeReport:  # fmt: skip
    zip_path = Path(zip_path)
    order = verify.TEST_ORDER if mode == "auto" else (mode,)
    venue, why = verify.find_venue(target, order, image, pull=mode == "docker")
    if venue is None:
        reasons = [why[kind] for kind in order if kind in why]
        raise CannotTestError(f"cannot test {zip_path} for {target.slug}: {', and '.join(reasons)}; start Docker with the "
                              f"runtime image {verify.runtime_image(target, image)} (or set --image) or install Python "
                              f"{target.python}")  # fmt: skip
    with layers_extracted([zip_path], prefix="layerbuild-test-") as root:
        modules, source = choose_modules(zip_path, root, target, imports)
        run = verify.run_imports(venue, root, target, modules, timeout, label=str(zip_path))
    notes = [f"not in Docker: {why['docker']}"] if "docker" in why else []
    return SmokeReport(str(zip_path), target.slug, venue.where, source, run.read_only, run.results, notes + run.notes,
                       run.runtime_packages)  # fmt: skip
