"""Slimming: drop what a Lambda function never uses at run time, strip debug symbols from ELF files.

Removed: __pycache__ compiled for other Python versions; `tests`/`test`/`docs`/`doc` directories
inside packages unless some module outside them imports them; stub and build sources (*.pyi,
*.pyx, *.pxd, *.pxi, *.c, *.h, *.cpp, *.hpp). RECORD lines of removed files are dropped. ELF files
of the target's machine lose their debug sections (`strip --strip-debug`: dynamic symbols, which
the loader needs, are kept) when a strip that understands that machine is installed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .elf import E_MACHINE_NUMBERS, ELF_MAGIC, read_section_names
from .layout import TreeEntry, fix_records, prune_empty_dirs, walk_tree
from .runtimes import MACHINE
from .threadpool import ThreadPool

SOURCE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp", ".hpp", ".cc")
OPTIONAL_DIR_NAMES = ("tests", "test", "docs", "doc")
# Directories that look optional but are imported at run time (checked by the import scan anyway).
KEEP_DIRS = ("numpy/testing", "pandas/_testing", "Cython/Tests")
# e_machine of the ELF header per Lambda architecture, and the strip binaries that understand it.
STRIP_TOOLS = {"x86_64": ("x86_64-linux-gnu-strip", "strip"), "arm64": ("aarch64-linux-gnu-strip",)}
STRIP_PACKAGES = {"x86_64": "binutils", "arm64": "binutils-aarch64-linux-gnu"}  # Debian's
_HOST_STRIP_MACHINE = {"x86_64": "x86_64", "aarch64": "arm64"}
_IMPORT_LINE = re.compile(r"^\s*(?:from\s+(\S+)\s+import\s+(\([^)]*\)|[^\n]+)|import\s+([^\n]+))", re.M)


@dataclass
class SlimResult:
    removed: list[str] = field(default_factory=list)  # paths relative to the layer root
    removed_bytes: int = 0
    stripped: int = 0
    stripped_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"slim: removed {len(self.removed)} files ({self.removed_bytes:,} bytes)"
        if self.stripped:
            text += f", stripped debug symbols from {self.stripped} ELF files (-{self.stripped_bytes:,} bytes)"
        return text


def strip_tool(arch: str) -> str | None:
    """A strip binary that understands the architecture's ELF files, or None."""
    import platform

    for name in STRIP_TOOLS[arch]:
        path = shutil.which(name)
        if path and (name != "strip" or _HOST_STRIP_MACHINE.get(platform.machine()) == arch):
            return path
    return None


def _is_package_dir(path: Path) -> bool:
    return (path.parent / "__init__.py").is_file() or any(path.parent.glob("__init__.*"))


def _resolve(module: str, package: str) -> str:
    """An import's absolute name: `..x` from package a.b.c is a.b.x."""
    if not module.startswith("."):
        return module
    dots = len(module) - len(module.lstrip("."))
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (dots - 1)] if dots - 1 <= len(parts) else []
    rest = module[dots:]
    return ".".join(base + ([rest] if rest else []))


def imports_of(rel: str, text: str) -> set[str]:
    """Absolute names a module (rel = path under site) imports, from its import statements."""
    names: set[str] = set()
    package = ".".join(rel.split("/")[:-1])  # for pkg/mod.py and pkg/__init__.py alike: pkg
    for match in _IMPORT_LINE.finditer(text):
        source, imported, plain = match.groups()
        if plain is not None:
            names.update(item.split(" as ")[0].strip() for item in plain.split("#")[0].split(";")[0].split(","))
            continue
        base = _resolve(source, package)
        names.add(base)
        imported = "\n".join(line.split("#")[0] for line in imported.splitlines()).split(";")[0]
        for item in imported.strip("()\n ").replace("\n", " ").split(","):
            item = item.split(" as ")[0].strip()
            if item and item != "*":
                names.add(f"{base}.{item}" if base else item)
    return names


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _referenced_modules(site: Path, skip: set[str], entries: list[TreeEntry]) -> set[str]:
    """Absolute names every module outside the candidate directories imports (static scan)."""
    names: set[str] = set()
    # A module that imports from a candidate names its directory as a word (pkg.tests, from . import tests):
    # only those are parsed (about one in four of numpy's, where "test" or "doc" as substrings matched most).
    leaves = sorted({s.rsplit("/", 1)[-1] for s in skip})
    for entry in entries:
        rel = entry.rel
        if not rel.endswith(".py") or any(rel.startswith(s + "/") for s in skip):
            continue
        text = _read(Path(entry.path))
        if any(_mentions_word(text, leaf) for leaf in leaves):
            names |= imports_of(rel, text)
    return names


def _mentions_word(text: str, word: str) -> bool:
    """Whether word appears in text as a whole identifier (str.find: a regex with \\b is 5x slower here)."""
    start = text.find(word)
    while start != -1:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            return True
        start = text.find(word, end)
    return False


def _within(name: str, dotted: str) -> bool:
    return name == dotted or name.startswith(dotted + ".")


def _module_file(site: Path, dotted: str) -> str | None:
    base = dotted.replace(".", "/")
    for rel in (f"{base}.py", f"{base}/__init__.py"):
        if (site / rel).is_file():
            return rel
    return None


def needed_files(site: Path, candidate: str, names: set[str]) -> set[str] | None:
    """The files of a tests/docs package that imports from outside need (with what they import in turn).

    None when that cannot be told statically (the package itself or a non-module name is used):
    then the whole directory stays.
    """
    dotted = candidate.replace("/", ".")
    keep: set[str] = set()
    pending = sorted(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or not _within(name, dotted):
            continue
        seen.add(name)
        parts = name.split(".")
        # The longest prefix that is a module: `pkg.tests._natype.pd_NA` is an attribute of pkg.tests._natype.
        for length in range(len(parts), len(dotted.split(".")), -1):
            module = _module_file(site, ".".join(parts[:length]))
            if module:
                break
        else:
            return None
        if module in keep:
            continue
        keep.add(module)
        pending.extend(imports_of(module, _read(site / module)))
    for module in list(keep):  # the packages on the way must stay importable
        folder = module.rsplit("/", 1)[0]
        while _within(folder.replace("/", "."), dotted):
            keep.add(f"{folder}/__init__.py")
            folder = folder.rsplit("/", 1)[0]
    return {k for k in keep if (site / k).is_file()}


def _source_of(path: str) -> str | None:
    """pkg/__pycache__/mod.cpython-312.pyc -> pkg/mod.py (bytecode stays with its kept source)."""
    folder, _, name = path.rpartition("/__pycache__/")
    return f"{folder}/{name.split('.', 1)[0]}.py" if name else None


def optional_paths(site: Path, entries: list[TreeEntry] | None = None) -> list[str]:
    """tests/docs directories inside packages (relative to site) that nothing outside them imports;
    for those partly imported, every file not needed. entries: walk_tree(site), when the caller has it."""
    entries = walk_tree(site) if entries is None else entries
    candidates = []
    for entry in entries:
        rel = entry.rel
        if entry.is_dir and entry.name in OPTIONAL_DIR_NAMES and "/" in rel and ".dist-info" not in rel:
            if rel in KEEP_DIRS or any(rel.startswith(c + "/") for c in candidates):
                continue
            if _is_package_dir(Path(entry.path)):
                candidates.append(rel)
    if not candidates:
        return []
    imports = _referenced_modules(site, set(candidates), entries)
    doomed = []
    for candidate in candidates:
        dotted = candidate.replace("/", ".")
        used = {name for name in imports if _within(name, dotted)}
        if not used:
            doomed.append(candidate)
            continue
        keep = needed_files(site, candidate, used)
        if keep is None:
            continue
        for entry in walk_tree(site / candidate):
            path = f"{candidate}/{entry.rel}"
            if entry.is_file and path not in keep and _source_of(path) not in keep:
                doomed.append(path)
    return doomed


def _other_pycache(rel: str, cache_tag: str) -> bool:
    return "/__pycache__/" in f"/{rel}" and rel.endswith(".pyc") and f".{cache_tag}." not in rel


def slim_tree(root: Path, arch: str, cache_tag: str) -> SlimResult:
    """Slim the layer tree in place (root holds python/, lib/, bin/)."""
    result = SlimResult()
    site = root / "python"
    doomed: list[Path] = []
    if site.is_dir():
        entries = walk_tree(site)  # one walk for both passes: nothing is removed until both have looked
        for rel in optional_paths(site, entries):
            doomed.append(site / rel)
        for entry in entries:
            if entry.is_file and (entry.rel.endswith(SOURCE_SUFFIXES) or _other_pycache(entry.rel, cache_tag)):
                doomed.append(Path(entry.path))
    for path in doomed:
        if not path.exists():
            continue  # inside a directory already removed
        files = [Path(e.path) for e in walk_tree(path) if e.is_file] if path.is_dir() else [path]
        for f in files:
            result.removed.append(f.relative_to(root).as_posix())
            result.removed_bytes += f.stat().st_size
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if result.removed:
        prune_empty_dirs(root)
        if site.is_dir():
            fix_records(site, {p[len("python/"):] for p in result.removed if p.startswith("python/")})
    strip_debug(root, arch, result)
    return result


def elf_files_with_debug(root: Path, arch: str) -> list[Path]:
    """ELF files of the architecture's machine that carry debug sections (only those are rewritten)."""
    found = []
    for entry in walk_tree(root):
        if entry.is_symlink or not entry.is_file:
            continue
        with open(entry.path, "rb") as handle:
            if handle.read(4) != ELF_MAGIC:
                continue
            facts = read_section_names(handle)
        if facts and facts.machine == E_MACHINE_NUMBERS[MACHINE[arch]] and any(
                name.startswith((".debug_", ".zdebug_")) for name in facts.section_names):  # fmt: skip
            found.append(Path(entry.path))
    return found


def strip_debug(root: Path, arch: str, result: SlimResult) -> None:
    candidates = elf_files_with_debug(root, arch)
    if not candidates:
        return
    tool = strip_tool(arch)
    if tool is None:
        result.notes.append(f"slim: {len(candidates)} {arch} ELF files keep their debug symbols: no strip for {arch} "
                            f"installed ({' or '.join(STRIP_TOOLS[arch])}, Debian's {STRIP_PACKAGES[arch]})")  # fmt: skip
        return
    before = sum(p.stat().st_size for p in candidates)

    def strip(path: Path) -> str | None:
        mode = path.stat().st_mode
        # strip writes a new file; -p is not used so the mtime does not matter (zips fix it anyway).
        proc = subprocess.run([tool, "--strip-debug", str(path)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            return (proc.stderr.strip().splitlines() or ["no message"])[-1]
        os.chmod(path, mode)
        return None

    # One strip process per file, a core each; results in candidate order, so notes are deterministic.
    with ThreadPool(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for path, failure in zip(candidates, pool.map(strip, candidates)):
            if failure is not None:
                result.notes.append(f"slim: strip failed for {path.relative_to(root).as_posix()}, kept as is: {failure}")
                continue
            result.stripped += 1
    result.stripped_bytes = before - sum(p.stat().st_size for p in candidates)
    site = root / "python"
    if site.is_dir():
        rehash_records(site, {p.relative_to(site).as_posix() for p in candidates if p.is_relative_to(site)})


def record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def rehash_records(site: Path, changed: set[str]) -> None:
    """Give rewritten files (stripped ELF) their new hash and size in RECORD, so it still verifies."""
    if not changed:
        return
    for record in sorted(site.glob("*.dist-info/RECORD")):
        lines = record.read_text(encoding="utf-8").splitlines()
        new = []
        for line in lines:
            path = line.split(",", 1)[0]
            if path in changed and (site / path).is_file():
                line = f"{path},{record_hash(site / path)},{(site / path).stat().st_size}"
            new.append(line)
        if new != lines:
            record.write_text("\n".join(new) + "\n", encoding="utf-8")
