"""What an ELF file needs from its surroundings, read with pyelftools (never readelf).

read_elf_facts(bytes) -> ElfFacts: machine, DT_NEEDED, RPATH/RUNPATH, SONAME, the symbol versions it
requires (per library, as the loader checks them) and the versions it defines. Works on bytes
already in memory, so a layer's files are read straight out of the zip.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field

from layerbuild.errors import LayerbuildError

ELF_MAGIC = b"\x7fELF"
# pyelftools' e_machine names -> the machine names of wheel tags and uname (runtimes.MACHINE values).
MACHINE_NAMES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i686", "EM_ARM": "armv7l",
                 "EM_PPC64": "ppc64le", "EM_S390": "s390x", "EM_RISCV": "riscv64"}  # fmt: skip
# GLIBC_2.17, GLIBCXX_3.4.21, CXXABI_1.3.9 (CXXABI_TM_1, GLIBC_PRIVATE are not numbered: ignored).
VERSION_PATTERN = re.compile(r"^(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)$")


# e_machine numbers, for the header-only reader below (no pyelftools needed).
E_MACHINE_NUMBERS = {"x86_64": 62, "aarch64": 183}


@dataclass(frozen=True)
class ElfHeaderFacts:
    machine: int  # e_machine number
    section_names: tuple[str, ...]


def read_section_names(handle) -> ElfHeaderFacts | None:
    """e_machine and section names from the ELF header and section headers only (a few reads, no
    pyelftools): enough to decide whether a file needs stripping. None if not ELF or malformed."""
    try:
        handle.seek(0)
        ident = handle.read(64)
        if len(ident) < 52 or ident[:4] != ELF_MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            return None
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        machine = struct.unpack_from(order + "H", ident, 18)[0]
        if wide:
            shoff, = struct.unpack_from(order + "Q", ident, 40)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 58)
            header = order + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(order + "I", ident, 32)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 46)
            header = order + "IIIIIIIIII"
        if shoff == 0 or shnum == 0 or shnum > 65280 or shstrndx >= shnum or shentsize < struct.calcsize(header):
            return ElfHeaderFacts(machine, ())
        handle.seek(shoff)
        table = handle.read(shentsize * shnum)
        if len(table) < shentsize * shnum:
            return None
        sections = [struct.unpack_from(header, table, i * shentsize) for i in range(shnum)]
        # (name, type, flags, addr, offset, size, ...): the string table's offset and size.
        strtab = sections[shstrndx]
        handle.seek(strtab[4])
        names = handle.read(min(strtab[5], 1 << 20))
        found = []
        for entry in sections:
            end = names.find(b"\0", entry[0])
            found.append(names[entry[0]:end if end >= 0 else None].decode("ascii", "replace"))
        return ElfHeaderFacts(machine, tuple(found))
    except (OSError, struct.error):
        return None


class ElfReadError(LayerbuildError):
    """A file starts like an ELF file but pyelftools cannot parse it."""


def parse_version(name: str) -> tuple[str, tuple[int, ...]] | None:
    """'GLIBC_2.17' -> ('GLIBC', (2, 17)); None for names outside the numbered families."""
    match = VERSION_PATTERN.match(name)
    if not match:
        return None
    return match.group(1), tuple(int(p) for p in match.group(2).split("."))


def format_version(family: str, version: tuple[int, ...]) -> str:
    return f"{family}_{'.'.join(str(p) for p in version)}"


@dataclass(frozen=True)
class ElfFacts:
    machine: str  # x86_64, aarch64, or pyelftools' EM_* name for anything else
    elf_class: int  # 32 or 64
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    soname: str | None = None
    # library file name (as in DT_NEEDED) -> symbol version names required from it
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defines: tuple[str, ...] = ()  # version names this file defines (a libstdc++ defines GLIBCXX_3.4.x)

    def max_required(self, family: str) -> tuple[int, ...] | None:
        """The newest version of GLIBC/GLIBCXX/CXXABI required from any library."""
        found = [v for names in self.requires.values() for n in names if (v := _in_family(n, family))]
        return max(found) if found else None

    def max_defined(self, family: str) -> tuple[int, ...] | None:
        found = [v for n in self.defines if (v := _in_family(n, family))]
        return max(found) if found else None


def _in_family(name: str, family: str) -> tuple[int, ...] | None:
    parsed = parse_version(name)
    return parsed[1] if parsed and parsed[0] == family else None


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


def load_reader() -> tuple:
    """pyelftools' classes, imported on first use: ~50 ms that a non-ELF layer never needs (a build imports
    them on a side thread while uv resolves)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

    return ELFError, DynamicSection, ELFFile, GNUVerDefSection, GNUVerNeedSection


def read_elf_facts(data: bytes, name: str = "<bytes>") -> ElfFacts | None:
    """Facts of an ELF file's bytes; None if it is not ELF; ElfReadError if it is corrupt."""
    if not is_elf(data):
        return None
    ELFError, DynamicSection, ELFFile, GNUVerDefSection, GNUVerNeedSection = load_reader()

    try:
        elf = ELFFile(io.BytesIO(data))
        needed, rpath, runpath, soname = [], [], [], None
        requires: dict[str, tuple[str, ...]] = {}
        defines: list[str] = []
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RPATH":
                        rpath.extend(p for p in tag.rpath.split(":") if p)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpath.extend(p for p in tag.runpath.split(":") if p)
                    elif tag.entry.d_tag == "DT_SONAME":
                        soname = tag.soname
            elif isinstance(section, GNUVerNeedSection):
                for verneed, auxiliaries in section.iter_versions():
                    names = tuple(aux.name for aux in auxiliaries)
                    requires[verneed.name] = tuple(sorted(set(requires.get(verneed.name, ()) + names)))
            elif isinstance(section, GNUVerDefSection):
                for _verdef, auxiliaries in section.iter_versions():
                    defines.extend(aux.name for aux in auxiliaries)
        machine = elf["e_machine"]
        return ElfFacts(
            machine=MACHINE_NAMES.get(machine, str(machine)),
            elf_class=elf.elfclass,
            needed=tuple(needed),
            rpath=tuple(rpath),
            runpath=tuple(runpath),
            soname=soname,
            requires=requires,
            defines=tuple(sorted(set(defines))),
        )
    except (ELFError, ValueError, KeyError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        # pyelftools raises a zoo of types on malformed input; the file is named, the cause kept to one line.
        raise ElfReadError(f"{name}: not a readable ELF file ({type(exc).__name__}: {exc})") from None
