"""Facts about a layer zip's files, read in memory (never extracted): the input of audit and stack.

The zip is vetted by safezip first (untrusted input). ELF files are read whole (pyelftools needs
the section headers at the end), .pyc files only for their magic number, everything else only for
its first four bytes.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from layerbuild.audit.elf import ElfReadError, is_elf, read_elf_facts
from layerbuild.audit.rules import AuditReport, FileFact, audit_files
from layerbuild.audit.stack import StackLayer
from layerbuild.errors import AuditError, LayerbuildError
from layerbuild.model.manifest import Manifest, manifest_path_for, read_manifest
from layerbuild.model.runtimes import Target, make_target
from layerbuild.util.safezip import LayerZip, open_layer_zip
from layerbuild.util.tree import walk_tree


@dataclass
class LayerFacts:
    layer: LayerZip
    files: list[FileFact]


def read_layer_facts(path: Path) -> LayerFacts:
    layer = open_layer_zip(path)
    facts = []
    with layer.reader() as read:
        for entry in layer.files:
            if entry.is_symlink:
                facts.append(FileFact(entry.name, entry.file_size, True, entry.link_target))
                continue
            head = read(entry.name, 4) if entry.file_size >= 4 else b""
            facts.append(_file_fact(entry.name, entry.file_size, head, lambda: read(entry.name)))
    return LayerFacts(layer, facts)


def read_tree_facts(root: Path, known: dict[str, FileFact] | None = None) -> list[FileFact]:
    """The same facts from the layer tree a build is zipping, read from disk while the zip is being
    deflated. The zip's entries are exactly these files by construction (write_deterministic_zip
    stores walk_tree(root), symlinks as the files they point to), so this audits the same bytes
    without inflating them back out of the zip. `known` facts (read_elf_tree_facts, taken earlier
    while bytecode compiled) are reused for files whose size has not changed since."""
    known = known or {}
    facts = []
    for entry in walk_tree(root):
        if entry.is_dir:
            continue
        rel, full = entry.rel, Path(entry.path)
        size = os.stat(entry.path).st_size
        earlier = known.get(rel)
        if earlier is not None and earlier.size == size:
            facts.append(earlier)
            continue
        with open(entry.path, "rb") as handle:
            head = handle.read(4)
        facts.append(_file_fact(rel, size, head if size >= 4 else b"", full.read_bytes))
    return facts


def read_elf_tree_facts(root: Path) -> dict[str, FileFact]:
    """Facts of the tree's ELF files only (the slow part: parsing). Bytecode compilation never touches
    them, so a build reads them while the compiler runs."""
    found = {}
    for entry in walk_tree(root):
        rel = entry.rel
        if rel.endswith((".py", ".pyc", ".pyi", ".txt", ".json")) or not entry.is_file:
            continue
        with open(entry.path, "rb") as handle:
            head = handle.read(4)
        if is_elf(head):
            full = Path(entry.path)
            found[rel] = _file_fact(rel, full.stat().st_size, head, full.read_bytes)
    return found


def _file_fact(name: str, size: int, head: bytes, read_all) -> FileFact:
    """ELF files are read whole (pyelftools needs the section headers at the end), .pyc files only
    for their magic number, everything else only for its first four bytes."""
    if name.endswith(".pyc"):
        magic = int.from_bytes(head[:2], "little") if len(head) >= 2 else None
        return FileFact(name, size, pyc_magic=magic)
    if is_elf(head):
        try:
            return FileFact(name, size, elf=read_elf_facts(read_all(), name))
        except ElfReadError as exc:
            return FileFact(name, size, elf_error=str(exc))
    return FileFact(name, size)


def manifest_beside(zip_path: Path) -> Manifest | None:
    path = manifest_path_for(Path(zip_path))
    return read_manifest(path) if path.is_file() and path != Path(zip_path) else None


def audit_target(zip_path: Path, python: str | None, arch: str | None) -> Target:
    """The flags win; what they leave open comes from the manifest beside the zip."""
    if not Path(zip_path).is_file():
        raise LayerbuildError(f"{zip_path}: no such file (give the path of a layer zip)")
    if Path(zip_path).suffix.lower() != ".zip" and not zipfile.is_zipfile(zip_path):
        raise LayerbuildError(f"{zip_path}: not a zip archive (give the path of a layer zip)")
    manifest = manifest_beside(zip_path) if not (python and arch) else None
    python = python or (manifest.python if manifest else None)
    arch = arch or (manifest.architecture if manifest else None)
    if not python or not arch:
        raise LayerbuildError(f"{zip_path}: no layerbuild manifest beside the zip ({manifest_path_for(Path(zip_path)).name}) "
                              f"to take the target from; pass --python X.Y and --arch x86_64|arm64")  # fmt: skip
    return make_target(python, arch)


def audit_zip(zip_path: Path, target: Target) -> AuditReport:
    facts = read_layer_facts(Path(zip_path))
    return audit_files(facts.files, target, facts.layer.zipped_bytes)


def stack_layer(zip_path: Path, label: str | None = None) -> StackLayer:
    """A zip's paths and sizes for stack simulation (vetted, nothing read but the directory)."""
    layer = open_layer_zip(Path(zip_path))
    manifest = manifest_beside(Path(zip_path))
    runtimes = tuple(manifest.compatible_runtimes or [manifest.runtime]) if manifest else None
    architectures = (manifest.architecture,) if manifest else None
    return StackLayer(label or Path(zip_path).name, {e.name: e.file_size for e in layer.files}, runtimes, architectures)


def audit_built_layer(files: list[FileFact], target: Target, zipped_bytes: int, notes: list[str]) -> dict:
    """The audit after a build: errors raise AuditError (the caller publishes nothing), warnings
    become build notes; returns the summary for the manifest's extra["audit"]."""
    report = audit_files(files, target, zipped_bytes)
    if report.errors:
        first = report.errors[0]
        raise AuditError(f"{target.slug}: the built layer fails the audit with {len(report.errors)} error(s), the first "
                         f"[{first.rule}] {first.message}; nothing was published")  # fmt: skip
    notes.extend(f"audit warning [{f.rule}] {f.message}" for f in report.warnings)
    return report.summary()
