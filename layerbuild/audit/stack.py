"""Simulate Lambda's /opt merge of layers (pure logic over each zip's file list and manifest).

Lambda extracts layers into /opt in the order they are listed; a path present in two layers ends
up holding the later layer's file. The function's own zip goes to /var/task, which is first on
sys.path. The stack fails on Lambda with more than 5 layers, more than 262,144,000 bytes unzipped
for function plus layers, or no runtime/architecture every layer supports.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from layerbuild.audit.rules import Finding
from layerbuild.limits import UNZIPPED_LIMIT
from layerbuild.model.runtimes import RUNTIME_MODULES, RUNTIME_PACKAGES
from layerbuild.util.safetext import printable

MAX_LAYERS = 5
_DISTRIBUTIONS = dict(zip(RUNTIME_MODULES, RUNTIME_PACKAGES))  # import name -> distribution (dateutil: python-dateutil)
# sys.path order of the Lambda Python runtimes: /var/task, then /opt/python/lib/pythonX.Y/site-packages, then /opt/python.
_SITE_PACKAGES = re.compile(r"^python/lib/python\d+\.\d+/site-packages/")
_NOT_PACKAGES = (".dist-info", ".egg-info", ".libs", ".pth", ".data")


@dataclass(frozen=True)
class StackLayer:
    label: str  # the zip's file name (or path)
    files: dict[str, int]  # layer path -> unzipped bytes (regular files and symlinks)
    runtimes: tuple[str, ...] | None = None  # from the manifest beside the zip, when present
    architectures: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Override:
    path: str
    layers: tuple[str, ...]  # every layer holding the path, in stack order
    winner: str

    def to_dict(self) -> dict:
        return {"path": self.path, "layers": list(self.layers), "winner": self.winner}


@dataclass(frozen=True)
class Shadowed:
    package: str
    providers: tuple[str, ...]  # "label:python/numpy" entries: layers in stack order, then the function
    winner: str

    def to_dict(self) -> dict:
        return {"package": self.package, "providers": list(self.providers), "winner": self.winner}


@dataclass(frozen=True)
class RuntimeShadow:
    """A package the runtime ships (boto3 ...) that a layer or the function provides too: theirs is imported."""

    package: str  # import name
    provider: str  # the layer's label, or "function"
    version: str | None  # from the provider's dist-info, when it has one
    runtime_versions: dict[str, str]  # runtime -> the version it ships

    def to_dict(self) -> dict:
        return {"package": self.package, "provider": self.provider, "version": self.version,
                "runtime_versions": dict(self.runtime_versions)}  # fmt: skip


@dataclass
class StackReport:
    layers: list[str]
    function: str | None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    shadowed: list[Shadowed] = field(default_factory=list)
    unzipped_bytes: int = 0
    common_runtimes: list[str] | None = None  # None: no layer had a manifest
    common_architectures: list[str] | None = None
    runtime_shadowed: list[RuntimeShadow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "layers": list(self.layers),
            "function": self.function,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "overrides": [o.to_dict() for o in self.overrides],
            "shadowed_packages": [s.to_dict() for s in self.shadowed],
            "sizes": {"unzipped_bytes": self.unzipped_bytes, "unzipped_limit": UNZIPPED_LIMIT},
            "common_runtimes": self.common_runtimes,
            "common_architectures": self.common_architectures,
            "runtime_shadowed": [r.to_dict() for r in self.runtime_shadowed],
        }


def top_level_package(path: str, in_function: bool = False) -> tuple[str, str] | None:
    """('numpy', 'python/lib/python3.12/site-packages/numpy') for an importable top-level name, else None.

    Layer paths are importable below python/ or its site-packages; a function's from its root (/var/task).
    """
    match = _SITE_PACKAGES.match(path)
    if in_function:
        base, rest = "", path
    elif match:
        base, rest = match.group(0), path[match.end():]
    elif path.startswith("python/"):
        base, rest = "python/", path[len("python/"):]
    else:
        return None
    head = rest.split("/", 1)[0]
    if "/" in rest:
        if head.endswith(_NOT_PACKAGES) or head == "__pycache__" or not head.isidentifier():
            return None
        return head, base + head
    module = head.split(".", 1)[0]  # six.py, _cffi_backend.cpython-312-x86_64-linux-gnu.so
    if head.endswith((".py", ".so", ".pyc")) and module.isidentifier():
        return module, base + head
    return None


def _providers(files: dict[str, int], in_function: bool = False) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in files:
        package = top_level_package(path, in_function)
        if package:
            found[package[0]].add(package[1])
    return found


def _search_rank(where: str) -> int:
    """Lower is found first on sys.path: /var/task, then site-packages, then /opt/python."""
    if where.startswith("function:"):
        return 0
    return 1 if "/site-packages" in where else 2


def simulate_stack(layers: list[StackLayer], function: StackLayer | None = None,
                   runtime_packages: dict[str, dict[str, str]] | None = None) -> StackReport:  # fmt: skip
    """runtime_packages: runtime -> {import name: version} of the packages each runtime ships (runtimesdk)."""
    report = StackReport([layer.label for layer in layers], function.label if function else None)
    # 1. the /opt merge: later layers win path by path
    holders: dict[str, list[str]] = defaultdict(list)
    for layer in layers:
        for path in layer.files:
            holders[path].append(layer.label)
    for path in sorted(holders):
        if len(holders[path]) > 1:
            report.overrides.append(Override(path, tuple(holders[path]), holders[path][-1]))
    pairs: dict[tuple[str, ...], int] = defaultdict(int)
    for override in report.overrides:
        pairs[override.layers] += 1
    for chain, count in sorted(pairs.items()):
        first = next(o.path for o in report.overrides if o.layers == chain)
        report.warnings.append(Finding("overridden-path", first,
                                       f"{count} path(s) such as {first} are in {', '.join(chain)}: "
                                       f"{chain[-1]} wins (listed last)"))  # fmt: skip
    # 2. shadowed packages: one importable name from several layers (or the function)
    providers: dict[str, list[str]] = defaultdict(list)
    for layer in layers:
        for package, places in _providers(layer.files).items():
            providers[package].extend(f"{layer.label}:{p}" for p in sorted(places))
    if function:
        for package, places in _providers(function.files, in_function=True).items():
            providers[package].extend(f"function:{p}" for p in sorted(places))  # /var/task: first on sys.path
    for package, places in sorted(providers.items()):
        owners = {p.split(":", 1)[0] for p in places}
        if len(owners) < 2:
            continue
        # sys.path order decides between locations; within one location the later layer's files won the merge.
        winner = min(reversed(places), key=_search_rank)
        report.shadowed.append(Shadowed(package, tuple(places), winner.split(":", 1)[0]))
        report.warnings.append(Finding("shadowed-package", package,
                                       f"package {package} is provided by {', '.join(sorted(owners))}; "
                                       f"{winner.split(':', 1)[0]} wins ({winner.split(':', 1)[1]}), the others' copy is "
                                       f"dead weight or, merged file by file, a mix of versions"))  # fmt: skip
    # 3. limits
    if len(layers) > MAX_LAYERS:
        report.errors.append(Finding("too-many-layers", "",
                                     f"{len(layers)} layers; Lambda allows at most {MAX_LAYERS} per function"))
    report.unzipped_bytes = sum(sum(layer.files.values()) for layer in layers) + (sum(function.files.values()) if function else 0)
    if report.unzipped_bytes > UNZIPPED_LIMIT:
        report.errors.append(Finding("unzipped-size", "",
                                     f"function plus layers unzip to {report.unzipped_bytes:,} bytes; Lambda allows "
                                     f"{UNZIPPED_LIMIT:,}"))  # fmt: skip
    # 4. common support, from the manifests that exist
    report.common_runtimes = _common(report, layers, "runtimes", "runtime")
    report.common_architectures = _common(report, layers, "architectures", "architecture")
    # 5. the runtime's own packages, after every layer on sys.path: a copy in a layer or the function wins
    if runtime_packages:
        runtimes = report.common_runtimes or sorted(runtime_packages)
        by_label = {layer.label: layer for layer in layers} | ({"function": function} if function else {})
        for package in sorted(set(providers) & {m for versions in runtime_packages.values() for m in versions}):
            winner = min(reversed(providers[package]), key=_search_rank).split(":", 1)[0]
            shipped = {r: runtime_packages[r][package] for r in sorted(runtimes, key=_version_key)
                       if package in runtime_packages.get(r, {})}  # fmt: skip
            version = _dist_version(by_label[winner].files, package, winner == "function")
            if version is not None and set(shipped.values()) == {version}:
                continue  # the very version the runtime ships: nothing changes
            report.runtime_shadowed.append(RuntimeShadow(package, winner, version, shipped))
            ships = "; ".join(f"{r} ships {v}" for r, v in shipped.items())
            report.warnings.append(Finding("runtime-package-shadowed", package,
                                           f"{package} {version or '(version unknown)'} from {winner} is imported "
                                           f"instead of the runtime's own ({ships}): the layer's copy wins"))  # fmt: skip
    return report


def _version_key(runtime: str) -> tuple[int, ...]:
    """python3.8 before python3.10."""
    return tuple(int(part) for part in runtime.removeprefix("python").split(".") if part.isdigit())


def _dist_version(files: dict[str, int], package: str, in_function: bool) -> str | None:
    """The version of the distribution that provides an import name, read off its .dist-info folder's name."""
    wanted = _DISTRIBUTIONS.get(package, package).replace("-", "_").lower()
    for path in files:
        rest = path if in_function else (_SITE_PACKAGES.sub("", path) if _SITE_PACKAGES.match(path) else path[len("python/"):])
        head = rest.split("/", 1)[0]
        if head.endswith(".dist-info") and "-" in head:
            name, version = head[: -len(".dist-info")].split("-", 1)
            if name.replace("-", "_").replace(".", "_").lower() == wanted:
                return version
    return None


def _common(report: StackReport, layers: list[StackLayer], attribute: str, noun: str) -> list[str] | None:
    known = [(layer.label, getattr(layer, attribute)) for layer in layers if getattr(layer, attribute)]
    if not known:
        return None
    common = set(known[0][1])
    for _label, values in known[1:]:
        common &= set(values)
    if not common:
        detail = "; ".join(f"{label}: {', '.join(values)}" for label, values in known)
        report.errors.append(Finding(f"no-common-{noun}", "",
                                     f"no {noun} is supported by every layer ({detail})"))
    unknown = [layer.label for layer in layers if not getattr(layer, attribute)]
    if unknown and common:
        report.warnings.append(Finding(f"unknown-{noun}", unknown[0],
                                       f"no manifest beside {', '.join(unknown)}: its {noun} support is unknown"))
    return sorted(common)


def render_stack(report: StackReport, max_overrides: int = 20) -> str:
    # Paths and labels come from the zips, whoever made them: printable() keeps their escapes off the terminal.
    function = f" with function {printable(report.function)}" if report.function else ""
    lines = [f"stack of {len(report.layers)} layer(s)" + function
             + ": " + ("ok" if report.ok else f"{len(report.errors)} error(s)") + f", {len(report.warnings)} warning(s)"]  # fmt: skip
    for index, label in enumerate(report.layers, 1):
        lines.append(f"  {index}. {printable(label)}")
    for label, findings in (("error", report.errors), ("warning", report.warnings)):
        for finding in findings:
            lines.append(f"  {label} [{finding.rule}] {printable(finding.message)}")
    if report.overrides:
        # Grouped by folder (python/numpy/, lib/) so a whole shadowed package is one line; --json lists every path.
        groups: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
        for override in report.overrides:
            parts = override.path.split("/")
            folder = "/".join(parts[:2]) + "/" if len(parts) > 2 else override.path
            groups[(folder, override.layers)] += 1
        lines.append(f"overridden paths ({len(report.overrides)}; the last layer wins):")
        for (folder, chain), count in list(groups.items())[:max_overrides]:
            lines.append(printable(f"  {folder} ({count} path{'s' if count > 1 else ''}): {' < '.join(chain)} -> {chain[-1]}"))
        if len(groups) > max_overrides:
            lines.append(f"  ... and {len(groups) - max_overrides} more folders (--json lists every path)")
    lines.append(f"size: {report.unzipped_bytes:,} bytes unzipped (limit {UNZIPPED_LIMIT:,} for function plus layers)")
    if report.common_runtimes is not None:
        lines.append(f"common runtimes: {', '.join(report.common_runtimes) or 'none'}")
    if report.common_architectures is not None:
        lines.append(f"common architectures: {', '.join(report.common_architectures) or 'none'}")
    return "\n".join(lines)
