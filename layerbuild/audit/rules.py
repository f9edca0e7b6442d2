"""Will this layer load on its target runtime? Pure rule logic over facts about the layer's files.

audit_files(files, target, zipped_bytes, os_libraries) -> AuditReport. The facts come from
layerfacts.py (zip reading) and elf.py (pyelftools); nothing here touches the disk apart from
loading the per-OS library lists in layerbuild/data/. Every finding has a stable rule id:

  errors:   elf-arch, glibc-version, glibcxx-version, cxxabi-version, abi-tag, missing-library,
            unzipped-size, python-outside-python
  warnings: foreign-bytecode, layout, zipped-size, elf-unreadable
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from layerbuild.audit.elf import ElfFacts, format_version, parse_version
from layerbuild.limits import DIRECT_UPLOAD_LIMIT, UNZIPPED_LIMIT
from layerbuild.model.runtimes import RUNTIMES, OperatingSystem, Target
from layerbuild.util.safetext import printable

TOP_PACKAGES = 10
LAYER_ROOT = "/opt"
LAYOUT_DIRS = ("python", "lib", "bin")
DATA_DIR = Path(__file__).resolve().parent / "data"
# LD_LIBRARY_PATH of the Lambda Python runtimes, in order: the OS's /lib64 and /usr/lib64 come
# *before* /opt/lib, so a layer's lib/libstdc++.so.6 loses to the OS's copy unless RPATH points at it.
LAYER_LIB_DIR = "lib"  # /opt/lib
VERSION_RULES = {"GLIBC": "glibc-version", "GLIBCXX": "glibcxx-version", "CXXABI": "cxxabi-version"}
_PYC_TAG = re.compile(r"\.cpython-(\d)(\d+)(?:\.opt-\d+)?\.pyc$")
_SITE_PACKAGES = re.compile(r"^python/lib/python(\d+\.\d+)/site-packages(?:/|$)")


@dataclass(frozen=True)
class FileFact:
    """One regular file (or symlink) of the layer, as seen without extracting it."""

    path: str  # relative to the layer root (python/numpy/__init__.py)
    size: int
    is_symlink: bool = False
    link_target: str | None = None
    elf: ElfFacts | None = None
    elf_error: str | None = None
    pyc_magic: int | None = None


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AuditReport:
    target: str  # python3.12-x86_64
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    largest_packages: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "ok": self.ok,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "sizes": dict(self.sizes),
            "largest_packages": list(self.largest_packages),
        }

    def summary(self) -> dict:
        """What goes into the manifest's extra["audit"]: counts and the warnings (errors fail builds)."""
        return {"ok": self.ok, "errors": len(self.errors), "warnings": [f.to_dict() for f in self.warnings]}


@lru_cache(maxsize=None)
def os_libraries(os_: OperatingSystem) -> frozenset[str]:
    """The sonames the Lambda base image of this OS provides (layerbuild/audit/data/*-libs.txt)."""
    text = (DATA_DIR / os_.libraries_file).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


# --- the audit -----------------------------------------------------------------------------------


def audit_files(files: list[FileFact], target: Target, zipped_bytes: int,
                os_libs: frozenset[str] | None = None) -> AuditReport:  # fmt: skip
    os_libs = os_libraries(target.runtime.os) if os_libs is None else os_libs
    report = AuditReport(target=target.slug)
    index = _LayerIndex(files)
    for fact in files:
        if fact.elf_error:
            report.warnings.append(Finding("elf-unreadable", fact.path, fact.elf_error))
        elif fact.elf:
            _check_elf(fact, target, index, os_libs, report)
        _check_abi_tag(fact, target, report)
    _check_bytecode(files, target, report)
    _check_layout(files, target, report)
    unzipped = sum(f.size for f in files)
    _check_sizes(unzipped, zipped_bytes, report)
    report.sizes = {"unzipped_bytes": unzipped, "zipped_bytes": zipped_bytes, "file_count": len(files),
                    "unzipped_limit": UNZIPPED_LIMIT, "direct_upload_limit": DIRECT_UPLOAD_LIMIT}  # fmt: skip
    report.largest_packages = largest_packages(files)
    report.errors.sort(key=lambda f: (f.rule, f.path, f.message))
    report.warnings.sort(key=lambda f: (f.rule, f.path, f.message))
    return report


class _LayerIndex:
    """Where files are, by directory, and which directories are auditwheel-style *.libs folders."""

    def __init__(self, files: list[FileFact]):
        self.by_dir: dict[str, dict[str, FileFact]] = defaultdict(dict)
        for fact in files:
            self.by_dir[posixpath.dirname(fact.path)][posixpath.basename(fact.path)] = fact
        self.sonames: dict[str, dict[str, FileFact]] = defaultdict(dict)
        for fact in files:
            if fact.elf and fact.elf.soname:
                self.sonames[posixpath.dirname(fact.path)][fact.elf.soname] = fact

    def lookup(self, directory: str, name: str) -> FileFact | None:
        found = self.by_dir.get(directory, {}).get(name)
        if found and found.is_symlink and found.link_target:  # follow one level of links inside the layer
            real = posixpath.normpath(posixpath.join(directory, found.link_target))
            return self.by_dir.get(posixpath.dirname(real), {}).get(posixpath.basename(real), found)
        return found or self.sonames.get(directory, {}).get(name)

    def in_libs_dirs(self, name: str, near: str) -> tuple[str, FileFact] | None:
        """A library in the ELF's own directory or any *.libs folder: loaded by a sibling that found it first."""
        for directory in [near] + sorted(d for d in self.by_dir if posixpath.basename(d).endswith(".libs")):
            found = self.lookup(directory, name)
            if found:
                return directory, found
        return None


@dataclass(frozen=True)
class _Resolved:
    where: str  # "layer" | "os" | "runtime"
    fact: FileFact | None = None  # the layer's file, when where == "layer"


def _search_dirs(paths: tuple[str, ...], elf_path: str) -> list[str]:
    """RPATH/RUNPATH entries as layer directories ($ORIGIN expanded); entries outside /opt are dropped."""
    origin = posixpath.join(LAYER_ROOT, posixpath.dirname(elf_path))
    dirs = []
    for entry in paths:
        expanded = posixpath.normpath(entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        if expanded == LAYER_ROOT or expanded.startswith(LAYER_ROOT + "/"):
            dirs.append(expanded[len(LAYER_ROOT) + 1:])
    return dirs


def _resolve(name: str, fact: FileFact, target: Target, index: _LayerIndex, os_libs: frozenset[str]) -> _Resolved | None:
    """Where the loader would find DT_NEEDED `name` for this file, in ld.so's order on Lambda."""
    elf = fact.elf
    assert elf is not None
    if "/" in name:  # a path, not a soname: taken as is
        found = index.lookup(*posixpath.split(posixpath.normpath(posixpath.join(posixpath.dirname(fact.path), name))))
        return _Resolved("layer", found) if found else None
    for directory in (_search_dirs(elf.rpath, fact.path) if not elf.runpath else []):
        if found := index.lookup(directory, name):
            return _Resolved("layer", found)
    # LD_LIBRARY_PATH: /var/lang/lib (libpython), /lib64 and /usr/lib64 (the OS), ..., /opt/lib (the layer's lib/)
    if name == f"libpython{target.python}.so.1.0":
        return _Resolved("runtime")
    if name in os_libs:
        return _Resolved("os")
    if found := index.lookup(LAYER_LIB_DIR, name):
        return _Resolved("layer", found)
    for directory in _search_dirs(elf.runpath, fact.path):
        if found := index.lookup(directory, name):
            return _Resolved("layer", found)
    if found := index.in_libs_dirs(name, posixpath.dirname(fact.path)):
        return _Resolved("layer", found[1])
    return None


def _check_elf(fact: FileFact, target: Target, index: _LayerIndex, os_libs: frozenset[str], report: AuditReport) -> None:
    elf = fact.elf
    assert elf is not None
    if elf.machine != target.machine:
        report.errors.append(Finding("elf-arch", fact.path,
                                     f"{fact.path} is built for {elf.machine}; a {target.arch} layer needs {target.machine} ELF files"))  # fmt: skip
        return  # nothing else about a foreign binary matters: it cannot load at all
    os_name = target.runtime.os.name
    for name in elf.needed:
        if _resolve(name, fact, target, index, os_libs) is None:
            searched = ", ".join(["lib/"] + [d + "/" for d in _search_dirs(elf.rpath + elf.runpath, fact.path)])
            report.errors.append(Finding("missing-library", fact.path,
                                         f"{fact.path} needs {name}, which is neither in the layer (searched {searched} "
                                         f"and *.libs/) nor in {os_name}'s base libraries"))  # fmt: skip
    for library, versions in elf.requires.items():
        resolved = _resolve(library, fact, target, index, os_libs)
        if resolved is None:
            continue  # already a missing-library error
        if resolved.where == "layer":
            _check_against_layer_library(fact, library, versions, resolved.fact, report)
        elif resolved.where == "os":
            _check_against_os(fact, library, versions, target, report)


def _newest(versions, family: str) -> tuple[int, ...] | None:
    found = [p[1] for v in versions if (p := parse_version(v)) and p[0] == family]
    return max(found) if found else None


def _check_against_os(fact: FileFact, library: str, versions, target: Target, report: AuditReport) -> None:
    os_ = target.runtime.os
    limits = {"GLIBC": os_.glibc, "GLIBCXX": os_.glibcxx, "CXXABI": os_.cxxabi}
    for family, limit in limits.items():
        newest = _newest(versions, family)
        if newest and newest > tuple(limit):
            what = {"GLIBC": "glibc", "GLIBCXX": "libstdc++", "CXXABI": "libstdc++"}[family]
            report.errors.append(Finding(VERSION_RULES[family], fact.path,
                                         f"{fact.path} requires {format_version(family, newest)} from {library}, but "
                                         f"{target.runtime.name} runs on {os_.name} whose {what} provides up to "
                                         f"{format_version(family, tuple(limit))}"))  # fmt: skip


def _check_against_layer_library(fact: FileFact, library: str, versions, provider: FileFact | None, report: AuditReport) -> None:
    if provider is None or provider.elf is None:
        return
    defined = set(provider.elf.defines)
    for family, rule in VERSION_RULES.items():
        missing = [v for v in versions if (p := parse_version(v)) and p[0] == family and v not in defined]
        if missing:
            newest = max(missing, key=lambda v: parse_version(v)[1])
            have = provider.elf.max_defined(family)
            report.errors.append(Finding(rule, fact.path,
                                         f"{fact.path} requires {newest} from {library}, but the layer's copy "
                                         f"{provider.path} provides up to "
                                         f"{format_version(family, have) if have else 'no ' + family + ' versions'}"))  # fmt: skip


def _check_abi_tag(fact: FileFact, target: Target, report: AuditReport) -> None:
    """Extension modules under python/: cpython-3XY-<machine>-linux-gnu, abi3 or a plain .so."""
    if not fact.path.startswith("python/") or not fact.path.endswith(".so"):
        return
    parts = posixpath.basename(fact.path).split(".")
    if len(parts) < 3:
        return  # plain name.so: loads under any CPython
    tag = parts[-2]
    expected = f"cpython-{target.runtime.cpython_tag[2:]}-{target.machine}-linux-gnu"
    if tag == "abi3" or tag == expected:
        return
    if tag.startswith(("cpython-", "pypy", "graalpy")) or "-linux-" in tag or "darwin" in tag or tag.startswith("cp3"):
        report.errors.append(Finding("abi-tag", fact.path,
                                     f"{fact.path} is an extension module for {tag}; {target.runtime.name} on "
                                     f"{target.arch} only loads .{expected}.so, .abi3.so or plain .so"))  # fmt: skip


def pyc_version(fact: FileFact) -> str | None:
    """The Python version a .pyc was compiled for: from its cpython-3XY tag, else its magic number."""
    match = _PYC_TAG.search(fact.path)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    if fact.pyc_magic is not None:
        for version, runtime in RUNTIMES.items():
            if runtime.pyc_magic[0] <= fact.pyc_magic <= runtime.pyc_magic[1]:
                return version
    return None


def _check_bytecode(files: list[FileFact], target: Target, report: AuditReport) -> None:
    """Foreign .pyc files are dead weight: the runtime ignores them. One warning per package and version."""
    groups: dict[tuple[str, str], list[FileFact]] = defaultdict(list)
    for fact in files:
        if not fact.path.endswith(".pyc"):
            continue
        version = pyc_version(fact)
        if version and version != target.python:
            groups[(package_of(fact.path), version)].append(fact)
    for (package, version), facts in sorted(groups.items()):
        first = min(facts, key=lambda f: f.path)
        wasted = sum(f.size for f in facts)
        more = f" and {len(facts) - 1} more in {package}" if len(facts) > 1 else ""
        report.warnings.append(Finding("foreign-bytecode", first.path,
                                       f"{first.path}{more}: compiled for Python {version}, dead weight on "
                                       f"{target.runtime.name} ({wasted:,} bytes)"))  # fmt: skip


def _check_layout(files: list[FileFact], target: Target, report: AuditReport) -> None:
    outside: dict[str, list[FileFact]] = defaultdict(list)
    wrong_site: dict[str, list[FileFact]] = defaultdict(list)
    for fact in files:
        top = fact.path.split("/", 1)[0]
        if top not in LAYOUT_DIRS:
            outside[top].append(fact)
            continue
        match = _SITE_PACKAGES.match(fact.path)
        if match and match.group(1) != target.python:
            wrong_site[match.group(0).rstrip("/")].append(fact)
    python_tops = sorted(top for top, facts in outside.items() if any(_is_python_file(f.path) for f in facts))
    if python_tops:  # the tutorial mistake: pymysql/... instead of python/pymysql/...; Lambda never imports those
        first = min(f.path for top in python_tops for f in outside[top] if _is_python_file(f.path))
        example = next((t for t in python_tops if not t.endswith((".dist-info", ".egg-info"))), python_tops[0])
        report.errors.append(Finding("python-outside-python", first,
                                     f"{first}: Python code at the zip root ({', '.join(t + '/' for t in python_tops)}), "
                                     f"where Lambda never imports from; put packages under python/ (python/{example}/..., "
                                     f"e.g. pip install --target python/ then zip python/)"))  # fmt: skip
    for top, facts in sorted(outside.items()):
        if top in python_tops:
            continue
        first = min(facts, key=lambda f: f.path).path
        report.warnings.append(Finding("layout", first,
                                       f"{first}: {len(facts)} file(s) under {top}/, which Lambda puts on no search path "
                                       f"(use python/, lib/ or bin/)"))  # fmt: skip
    for site, facts in sorted(wrong_site.items()):
        first = min(facts, key=lambda f: f.path).path
        report.warnings.append(Finding("layout", first,
                                       f"{first}: {len(facts)} file(s) under {site}/, but {target.runtime.name} only adds "
                                       f"python/ and python/lib/python{target.python}/site-packages/ to sys.path"))  # fmt: skip


def _is_python_file(path: str) -> bool:
    return path.endswith((".py", ".pyc", ".so")) or ".dist-info/" in path or ".egg-info/" in path


def _check_sizes(unzipped: int, zipped: int, report: AuditReport) -> None:
    if unzipped > UNZIPPED_LIMIT:
        report.errors.append(Finding("unzipped-size", "",
                                     f"the layer unzips to {unzipped:,} bytes; Lambda allows {UNZIPPED_LIMIT:,} bytes "
                                     f"for function plus all layers"))  # fmt: skip
    if zipped > DIRECT_UPLOAD_LIMIT:
        report.warnings.append(Finding("zipped-size", "",
                                       f"the zip is {zipped:,} bytes, over the {DIRECT_UPLOAD_LIMIT:,}-byte direct upload "
                                       f"limit: publishing needs S3 (layerbuild publish --s3-bucket BUCKET)"))  # fmt: skip


def package_of(path: str) -> str:
    """The top-level importable name (or lib/, bin/, other top folder) a layer path belongs to."""
    if path.startswith("python/"):
        rest = path[len("python/"):]
        match = _SITE_PACKAGES.match(path)
        if match:
            rest = path[match.end():]
        return rest.split("/", 1)[0] or "python/"
    top = path.split("/", 1)[0]
    return top + "/"


def largest_packages(files: list[FileFact], count: int = TOP_PACKAGES) -> list[dict]:
    totals: dict[str, int] = defaultdict(int)
    for fact in files:
        totals[package_of(fact.path)] += fact.size
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]
    return [{"name": name, "unzipped_bytes": size} for name, size in ranked]


# --- the readable report -----------------------------------------------------------------------


def render_report(report: AuditReport, zip_name: str) -> str:
    # Entry names come from the zip, whoever made it: printable() keeps their escapes off the terminal.
    lines = [f"audit {printable(zip_name)} for {report.target}: " + ("ok" if report.ok else f"{len(report.errors)} error(s)")
             + f", {len(report.warnings)} warning(s)"]  # fmt: skip
    for label, findings in (("error", report.errors), ("warning", report.warnings)):
        for finding in findings:
            lines.append(f"  {label} [{finding.rule}] {printable(finding.message)}")
    sizes = report.sizes
    lines.append(f"size: {sizes['unzipped_bytes']:,} bytes unzipped (limit {UNZIPPED_LIMIT:,} for function plus layers), "
                 f"{sizes['zipped_bytes']:,} bytes zipped, {sizes['file_count']:,} files")  # fmt: skip
    if report.largest_packages:
        lines.append("largest packages (unzipped):")
        names = [printable(p["name"]) for p in report.largest_packages]
        width = max(len(name) for name in names)
        for name, package in zip(names, report.largest_packages):
            lines.append(f"  {name:<{width}}  {package['unzipped_bytes']:>13,}")
    return "\n".join(lines)
