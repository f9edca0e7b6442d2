"""Facts about a layer zip's files, read in memory (never extracted): the input of audit and stack.

The zip is vetted by safezip first (untrusted input). ELF files are read whole (pyelftools needs
the section headers at the end), .pyc files only for their magic number, everything else only for
its first four bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .audit import AuditReport, FileFact, audit_files
from .elf import ElfReadError, is_elf, read_elf_facts
from .errors import LayerbuildError
from .manifest import Manifest, manifest_path_for, read_manifest
from .runtimes import Target, make_target
from .safezip import LayerZip, open_layer_zip


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
            if entry.name.endswith(".pyc"):
                magic = int.from_bytes(head[:2], "little") if len(head) >= 2 else None
                facts.append(FileFact(entry.name, entry.file_size, pyc_magic=magic))
            elif is_elf(head):
                try:
                    facts.append(FileFact(entry.name, entry.file_size, elf=read_elf_facts(read(entry.name), entry.name)))
                except ElfReadError as exc:
                    facts.append(FileFact(entry.name, entry.file_size, elf_error=str(exc)))
            else:
                facts.append(FileFact(entry.name, entry.file_size))
    return LayerFacts(layer, facts)


def manifest_beside(zip_path: Path) -> Manifest | None:
    path = manifest_path_for(Path(zip_path))
    return read_manifest(path) if path.is_file() else None


def audit_target(zip_path: Path, python: str | None, arch: str | None) -> Target:
    """The flags win; what they leave open comes from the manifest beside the zip."""
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
