"""layerbuild.audit.elf on real ELF files compiled on the host with gcc (and on the host's own libstdc++)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from layerbuild.audit.elf import ElfReadError, parse_version, read_elf_facts

HOST_MACHINE = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(HOST_MACHINE, HOST_MACHINE)

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc on the host to compile test ELF files")

# pthread_create moved into libc in glibc 2.34 and is versioned GLIBC_2.34 when linked against 2.34+.
PTHREAD_SOURCE = """
#include <pthread.h>
static void *work(void *arg) { return arg; }
int start(void) { pthread_t t; return pthread_create(&t, 0, work, 0); }
"""
PLAIN_SOURCE = "int answer(void) { return 42; }\n"


def compile_shared(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    """gcc -shared: the .so is written to tmp_path/name."""
    src = tmp_path / f"{name}.c"
    src.write_text(source, encoding="utf-8")
    out = tmp_path / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *flags], check=True, capture_output=True, timeout=120)
    return out


def host_glibc() -> tuple[int, int]:
    major, minor = platform.libc_ver()[1].split(".")[:2]
    return int(major), int(minor)


@needs_gcc
def test_needed_soname_rpath_and_glibc_versions(tmp_path):
    lib = compile_shared(tmp_path, "libdep.so", PLAIN_SOURCE, "-Wl,-soname,libdep.so.1")  # linked by soname
    ext = compile_shared(tmp_path, "ext.so", PTHREAD_SOURCE, f"-L{tmp_path}", "-Wl,--no-as-needed", "-ldep", "-Wl,--disable-new-dtags",
                         "-Wl,-rpath,$ORIGIN/../mypkg.libs")  # fmt: skip
    facts = read_elf_facts(ext.read_bytes(), "ext.so")
    assert facts.machine == HOST_MACHINE and facts.elf_class == 64
    assert "libdep.so.1" in facts.needed and "libc.so.6" in facts.needed
    assert facts.rpath == ("$ORIGIN/../mypkg.libs",) and facts.runpath == ()
    if host_glibc() >= (2, 34):
        assert facts.max_required("GLIBC") >= (2, 34)
        assert "GLIBC_2.34" in facts.requires["libc.so.6"]
    assert facts.max_required("GLIBCXX") is None
    assert read_elf_facts(lib.read_bytes()).soname == "libdep.so.1"


@needs_gcc
def test_runpath_is_read_separately_from_rpath(tmp_path):
    ext = compile_shared(tmp_path, "ext.so", PLAIN_SOURCE, "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN:/opt/lib")
    facts = read_elf_facts(ext.read_bytes())
    assert facts.runpath == ("$ORIGIN", "/opt/lib") and facts.rpath == ()


def test_host_libstdcxx_defines_glibcxx_and_cxxabi_versions():
    candidates = [Path(p) for p in ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
                                    "/usr/lib64/libstdc++.so.6")]  # fmt: skip
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        pytest.skip("no libstdc++.so.6 on this host")
    facts = read_elf_facts(path.read_bytes(), str(path))
    assert facts.soname == "libstdc++.so.6"
    assert facts.max_defined("GLIBCXX") >= (3, 4, 21)
    assert facts.max_defined("CXXABI") >= (1, 3, 9)
    assert "GLIBCXX_3.4" in facts.defines


def test_not_elf_is_none_and_corrupt_elf_is_one_line_error():
    assert read_elf_facts(b"#!/bin/sh\n") is None
    assert read_elf_facts(b"") is None
    with pytest.raises(ElfReadError) as caught:
        read_elf_facts(b"\x7fELF" + b"\x02\x01\x01" + b"\x00" * 9 + b"\xff" * 20, "python/broken.so")
    assert str(caught.value).startswith("python/broken.so: not a readable ELF file")
    assert "\n" not in str(caught.value)


def test_parse_version():
    assert parse_version("GLIBC_2.17") == ("GLIBC", (2, 17))
    assert parse_version("GLIBCXX_3.4.21") == ("GLIBCXX", (3, 4, 21))
    assert parse_version("CXXABI_1.3.9") == ("CXXABI", (1, 3, 9))
    assert parse_version("GLIBC_PRIVATE") is None
    assert parse_version("CXXABI_TM_1") is None
    assert parse_version("OPENSSL_3.0.0") is None


@needs_gcc
def test_header_reader_sees_the_sections_pyelftools_sees(tmp_path):
    """slim decides what to strip from section names read without pyelftools: they must agree."""
    import io

    from elftools.elf.elffile import ELFFile

    from layerbuild.audit.elf import E_MACHINE_NUMBERS, read_section_names

    debug = compile_shared(tmp_path, "libdebug.so", PLAIN_SOURCE, "-g")
    plain = compile_shared(tmp_path, "libplain.so", PLAIN_SOURCE, "-s")
    import sys

    candidates = [debug, plain] + [p for p in (Path("/bin/ls"), Path(sys.executable).resolve()) if p.read_bytes()[:4] == b"\x7fELF"]
    for path in candidates:
        data = path.read_bytes()
        elf = ELFFile(io.BytesIO(data))
        facts = read_section_names(io.BytesIO(data))
        assert facts is not None, path
        assert facts.section_names == tuple(s.name for s in elf.iter_sections()), path
        assert facts.machine == E_MACHINE_NUMBERS[HOST_MACHINE]
    assert any(n.startswith(".debug_") for n in read_section_names(io.BytesIO(debug.read_bytes())).section_names)
    assert not any(n.startswith(".debug_") for n in read_section_names(io.BytesIO(plain.read_bytes())).section_names)
    # Not ELF, truncated, or a section table pointing past the end: None, never an exception.
    whole = debug.read_bytes()
    for broken in (b"", b"#!/bin/sh\n", whole[:40], whole[:64], whole[: len(whole) // 2]):
        assert read_section_names(io.BytesIO(broken)) is None
