"""Slimming: drop what a Lambda function never uses at run time, strip debug symbols from ELF files.

Removed: __pycache__ compiled for other Python versions; `tests`/`test`/`docs`/`doc` directories
inside packages unless some module outside them imports them; stub and build sources (*.pyi,
*.pyx, *.pxd, *.pxi, *.c, *.h, *.cpp, *.hpp). RECORD lines of removed files are dropped. ELF files
of the target's machine lose their debug sections (`strip --strip-debug`: dynamic symbols, which
the loader needs, are kept) when a strip that understands that machine is installed.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.build import importscan
from layerbuild.audit.elf import E_MACHINE_NUMBERS, ELF_MAGIC, read_section_names
from layerbuild.util.records import drop_removed_files, rehash_files
from layerbuild.util.tree import TreeEntry, prune_empty_dirs, walk_tree
from layerbuild.model.runtimes import MACHINE
from layerbuild.util.threadpool import ThreadPool

SOURCE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp", ".hpp", ".cc")
OPTIONAL_DIR_NAMES = ("tests", "test", "docs", "doc")
# Directories that look optional but are imported at run time (checked by the import scan anyway).
KEEP_DIRS = ("numpy/testing", "pandas/_testing", "Cython/Tests")
# e_machine of the ELF header per Lambda architecture, and the strip binaries that understand it.
STRIP_TOOLS = {"x86_64": ("x86_64-linux-gnu-strip", "strip"), "arm64": ("aarch64-linux-gnu-strip",)}
STRIP_PACKAGES = {"x86_64": "binutils", "arm64": "binutils-aarch64-linux-gnu"}  # Debian's
_HOST_STRIP_MACHINE = {"x86_64": "x86_64", "aarch64": "arm64"}
_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
# The end of a string literal naming a file with one of SOURCE_SUFFIXES: a file the code may open by name.
_NAMED_SOURCE_END = re.compile(r"""\.(?:pyi|pyx|pxd|pxi|c|h|cpp|hpp|cc)['"]""")


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


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _within(name: str, dotted: str) -> bool:
    return name == dotted or name.startswith(dotted + ".")


def _source_of(path: str) -> str | None:
    """pkg/__pycache__/mod.cpython-312.pyc -> pkg/mod.py (bytecode stays with its kept source)."""
    folder, _, name = path.rpartition("/__pycache__/")
    return f"{folder}/{name.split('.', 1)[0]}.py" if name else None


class _Reach:
    """Which files of the candidates (tests/docs folders inside packages, conftest.py files) the kept code reaches.

    Followed to a fixed point: every import (static, or dynamic with a literal name) of a kept
    module, through the `__init__.py` of every package on the way; dotted names in string literals
    (importlib.resources.files("pkg.tests.data") keeps that package's folder); string literals that
    build a path from the module's own location (os.path.join(os.path.dirname(__file__), "tests",
    "x.json"), pkgutil.get_data). An import of a name computed at run time reaches a candidate below
    its literal part when the module spells the candidate's folder name in a string literal (scipy's
    `import_module(f"scipy.{name}")` with `name` from a literal list reaches no tests). In doubt, a
    whole candidate stays: a name that is no module file it has (an extension module, a namespace
    folder). Every module kept, whole folders included, is read in turn.
    """

    def __init__(self, site: Path, entries: list[TreeEntry], candidates: list[str]):
        self.site = site
        self.candidates = set(candidates)
        self.dotted = {c: importscan.module_name(c) for c in candidates}
        self.files = {e.rel for e in entries if e.is_file}
        self.dirs = {e.rel for e in entries if e.is_dir}
        # pkg/mod for pkg/mod.cpython-312-x86_64-linux-gnu.so and pkg/mod.pyc: modules we cannot read
        self.opaque = {f.rpartition("/")[0] + "/" + f.rpartition("/")[2].split(".", 1)[0]
                       for f in self.files if f.endswith((".so", ".pyc")) and "/__pycache__/" not in f"/{f}"}  # fmt: skip
        self.kept: set[str] = set()  # files and folders (with all below them) of candidates that stay
        self.pending: list[str] = []  # module names still to follow
        self.unread: list[str] = []  # kept modules of candidates still to read
        self.read: set[str] = set()
        self.words = sorted({c.rsplit("/", 1)[-1].removesuffix(".py") for c in candidates})

    @property
    def whole(self) -> set[str]:
        return self.candidates & self.kept

    def candidate_of_path(self, rel: str) -> str | None:
        parts = rel.split("/")
        for length in range(1, len(parts) + 1):
            prefix = "/".join(parts[:length])
            if prefix in self.candidates:
                return prefix
        return None

    def candidate_of_name(self, name: str) -> str | None:
        return self.candidate_of_path(name.replace(".", "/")) or self.candidate_of_path(name.replace(".", "/") + ".py")

    def take(self, rel: str, text: str) -> None:
        """What module rel (kept) refers to."""
        self.read.add(rel)
        refs = importscan.scan(rel, text, self.words)
        self.pending.extend(refs.imports)
        folder = rel.rpartition("/")[0]
        for string in refs.strings:
            if _DOTTED_NAME.match(string) and string.replace(".", "/") in self.dirs:
                self.keep(string.replace(".", "/"))  # a package named for its resources: its folder stays
            elif string and not string.startswith("/"):  # a path relative to the module's folder
                self.keep(posixpath.normpath(f"{folder}/{string}" if folder else string))
        if refs.dynamic:
            spelled = {part for s in importscan.string_literals(text) for part in re.split(r"[./]", s)}
            mine = self.candidate_of_path(rel)
            for prefix in refs.dynamic:
                # Nothing of the name known: taken to be a plugin beside the module (its own package).
                scope = prefix or importscan.package_of(rel)
                for candidate, dotted in self.dotted.items():
                    if not (_within(dotted, scope) or _within(scope, dotted)):
                        continue
                    if candidate == mine or candidate.rsplit("/", 1)[-1].removesuffix(".py") in spelled:
                        self.keep(candidate)

    def keep(self, path: str) -> None:
        """Keep a file or folder of a candidate (nothing else is ours to keep); its modules are read in turn."""
        if path in self.kept or self.candidate_of_path(path) is None or not (path in self.files or path in self.dirs):
            return
        self.kept.add(path)
        if path in self.files:
            self.unread.append(path)
        else:
            self.unread.extend(f for f in self.files if f.startswith(path + "/"))

    def follow(self) -> None:
        seen: set[str] = set()
        while self.pending or self.unread:  # bounded: each name and each file once, from a finite tree
            if self.unread:
                path = self.unread.pop()
                if path.endswith(".py") and path not in self.read:
                    self.take(path, _read(str(self.site / path)))
                continue
            name = self.pending.pop()
            if name in seen:
                continue
            seen.add(name)
            candidate = self.candidate_of_name(name)
            if candidate is None or candidate in self.kept:
                continue
            module = self._module_file(candidate, name)
            if module is None:
                self.keep(candidate)  # not a module file we can read: keep it all
                continue
            for path in self._packages_on_the_way(candidate, module) + [module]:
                self.keep(path)

    def _module_file(self, candidate: str, name: str) -> str | None:
        """The file of the longest prefix of name that is a module in candidate
        (`pkg.tests._natype.pd_NA` is an attribute of pkg/tests/_natype.py)."""
        if candidate.endswith(".py"):
            return candidate
        parts = name.split(".")
        for length in range(len(parts), len(self.dotted[candidate].split(".")) - 1, -1):
            base = "/".join(parts[:length])
            for rel in (f"{base}.py", f"{base}/__init__.py"):
                if rel in self.files:
                    return rel
            if base in self.dirs or base in self.opaque:
                return None  # a namespace folder or an extension / sourceless module: in doubt
        return None

    def _packages_on_the_way(self, candidate: str, module: str) -> list[str]:
        """The __init__.py files Python runs before module: from the candidate down to module's folder."""
        if candidate.endswith(".py"):
            return []
        found = []
        folder = candidate
        for part in [""] + module[len(candidate):].strip("/").split("/")[:-1]:
            folder = f"{folder}/{part}" if part else folder
            if f"{folder}/__init__.py" in self.files:
                found.append(f"{folder}/__init__.py")
        return found

    def doomed(self) -> list[str]:
        below_of: dict[str, list[str]] = {}
        for rel in sorted(self.files):
            candidate = self.candidate_of_path(rel)
            if candidate is not None:
                below_of.setdefault(candidate, []).append(rel)
        out = []
        for candidate in sorted(self.candidates - self.whole):
            if candidate.endswith(".py"):
                if candidate not in self.kept:
                    out.append(candidate)
                continue
            below = below_of.get(candidate, [])
            if not any(self._is_kept(f) for f in below):
                out.append(candidate)  # nothing of it is reached: the whole folder goes
                continue
            out.extend(f for f in below if not self._is_kept(f))
        return out

    def _is_kept(self, rel: str) -> bool:
        if rel in self.kept or _source_of(rel) in self.kept:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:n]) in self.kept for n in range(1, len(parts)))


def _candidates(entries: list[TreeEntry]) -> list[str]:
    """tests/test/docs/doc folders inside packages (never the KEEP_DIRS), outermost only, and conftest.py
    files (pytest's, which nothing imports) inside packages."""
    found: list[str] = []
    for entry in entries:
        rel = entry.rel
        if entry.is_file and entry.name == "conftest.py" and "/" in rel and not any(rel.startswith(c + "/") for c in found):
            if _is_package_dir(Path(entry.path)):
                found.append(rel)
        elif entry.is_dir and entry.name in OPTIONAL_DIR_NAMES and "/" in rel and ".dist-info" not in rel:
            if rel in KEEP_DIRS or any(rel.startswith(c + "/") for c in found):
                continue
            if _is_package_dir(Path(entry.path)):
                found.append(rel)
    return found


def removals(site: Path, entries: list[TreeEntry], cache_tag: str) -> list[str]:
    """What slimming removes below site (paths relative to it; a folder goes whole):
    - tests/docs folders inside packages that nothing kept reaches, and the files of partly reached
      ones that are not reached (_Reach);
    - stub and build sources (SOURCE_SUFFIXES) unless a module of the same top-level package names
      the file in a string literal (cffi reads its _cffi_include.h at run time, f2py its fortranobject.c);
    - __pycache__ files of other Python versions.
    Every module is read at most once."""
    candidates = _candidates(entries)
    reach = _Reach(site, entries, candidates) if candidates else None
    sources = [e for e in entries if e.is_file and e.rel.endswith(SOURCE_SUFFIXES)]
    source_tops = {e.rel.split("/", 1)[0] for e in sources}
    named: dict[str, set[str]] = {}  # top-level folder -> source file names its modules name
    for entry in entries:
        if not (entry.is_file and entry.rel.endswith(".py")):
            continue
        top = entry.rel.split("/", 1)[0]
        outside = reach if reach is not None and reach.candidate_of_path(entry.rel) is None else None
        if top not in source_tops and outside is None:
            continue
        text = _read(entry.path)
        if top in source_tops:
            named.setdefault(top, set()).update(_named_sources(text))
        # A kept module can only reach a candidate by naming it (an import, a dotted or a path string): only
        # modules that name one of the candidates' folder names as a whole word are read further.
        if outside is not None and any(importscan.mentions_word(text, word) for word in outside.words):
            outside.take(entry.rel, text)
    doomed: list[str] = []
    if reach is not None:
        reach.follow()
        doomed = reach.doomed()
    doomed += [e.rel for e in sources if e.name not in named.get(e.rel.split("/", 1)[0], ())]
    doomed += [e.rel for e in entries if e.is_file and _other_pycache(e.rel, cache_tag)]
    return doomed


def _named_sources(text: str) -> set[str]:
    """File names of string literals that end in one of SOURCE_SUFFIXES ('_cffi_include.h', 'src/x.c' -> x.c)."""
    found = set()
    for match in _NAMED_SOURCE_END.finditer(text):
        end = match.end() - 1
        start = max(text.rfind(q, max(0, end - 200), end) for q in "'\"\n")
        if start != -1 and text[start] == text[end]:
            found.add(text[start + 1 : end].rsplit("/", 1)[-1])
    return found


def optional_paths(site: Path, entries: list[TreeEntry] | None = None) -> list[str]:
    """Only the tests/docs part of removals(): what slimming takes of those folders."""
    entries = walk_tree(site) if entries is None else entries
    return [p for p in removals(site, entries, "-") if not p.endswith(SOURCE_SUFFIXES) and "/__pycache__/" not in f"/{p}"]


def _other_pycache(rel: str, cache_tag: str) -> bool:
    return "/__pycache__/" in f"/{rel}" and rel.endswith(".pyc") and f".{cache_tag}." not in rel


def slim_tree(root: Path, arch: str, cache_tag: str, remove: bool = True) -> SlimResult:
    """Slim the layer tree in place (root holds python/, lib/, bin/); remove=False only strips debug symbols."""
    result = SlimResult()
    site = root / "python"
    doomed: list[Path] = []
    if site.is_dir() and remove:
        doomed = [site / rel for rel in removals(site, walk_tree(site), cache_tag)]
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
            drop_removed_files(site, {p[len("python/"):] for p in result.removed if p.startswith("python/")})
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
        rehash_files(site, {p.relative_to(site).as_posix() for p in candidates if p.is_relative_to(site)})
