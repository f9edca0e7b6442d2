"""Bytecode in layers: unchecked-hash .pyc for the target Python, alongside / only / none."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from layerbuild.build import bytecode
from layerbuild.build.pipeline import build_target
from layerbuild.cache import bytecode as pyccache
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import make_target

HOST = "%d.%d" % sys.version_info[:2]
HOST_TAG = sys.implementation.cache_tag
UNCHECKED_HASH_FLAGS = 0b01  # PEP 552: hash-based, check_source off


def build(tmp_path, out="dist", python=HOST, **fields):
    recipe = parse_recipe({"name": "bc", "packages": ["pymysql"], **fields}, "bc.yaml")
    return build_target(recipe, make_target(python, "x86_64"), out_dir=tmp_path / out, use_cache=False)


def names(zip_path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def read(zip_path, name) -> bytes:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(name)


def pyc_flags(data: bytes) -> int:
    return int.from_bytes(data[4:8], "little")


def extract_read_only(zip_path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(dirpath, 0o555)
    return dest / "python"


def import_from(site: Path, module: str) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import {module} as m; "
            "print(m.__spec__.origin); print(m.__spec__.loader.__class__.__name__)")  # fmt: skip
    # -B: as root, file modes alone would not stop Python writing __pycache__ (/opt on Lambda is a read-only mount).
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, timeout=120)


@pytest.fixture(autouse=True)
def writable_cleanup(tmp_path):
    yield
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        os.chmod(dirpath, 0o755)


@pytest.mark.network
def test_alongside_ships_unchecked_hash_pyc_listed_in_record(tmp_path):
    outcome = build(tmp_path)
    listing = names(outcome.zip_path)
    pyc = f"python/pymysql/__pycache__/__init__.{HOST_TAG}.pyc"
    assert "python/pymysql/__init__.py" in listing and pyc in listing
    assert pyc_flags(read(outcome.zip_path, pyc)) == UNCHECKED_HASH_FLAGS
    assert all(pyc_flags(read(outcome.zip_path, n)) == UNCHECKED_HASH_FLAGS for n in listing if n.endswith(".pyc"))
    record = next(n for n in listing if n.endswith(".dist-info/RECORD"))
    lines = read(outcome.zip_path, record).decode().splitlines()
    pyc_line = next(line for line in lines if line.startswith(pyc[len("python/"):] + ","))
    digest = hashlib.sha256(read(outcome.zip_path, pyc)).digest()
    import base64

    assert pyc_line.split(",")[1] == "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert any("bytecode: alongside" in note for note in outcome.manifest.extra["notes"])


@pytest.mark.network
def test_only_is_sourceless_and_imports_from_a_read_only_copy(tmp_path):
    outcome = build(tmp_path, bytecode="only")
    listing = names(outcome.zip_path)
    assert "python/pymysql/__init__.pyc" in listing
    assert not [n for n in listing if n.startswith("python/pymysql/") and n.endswith(".py")]
    assert not [n for n in listing if "__pycache__" in n]
    assert pyc_flags(read(outcome.zip_path, "python/pymysql/__init__.pyc")) == UNCHECKED_HASH_FLAGS
    record = read(outcome.zip_path, next(n for n in listing if n.endswith(".dist-info/RECORD"))).decode()
    assert "pymysql/__init__.pyc," in record and "pymysql/__init__.py," not in record

    site = extract_read_only(outcome.zip_path, tmp_path / "opt")
    result = import_from(site, "pymysql.connections")
    assert result.returncode == 0, result.stderr
    origin, loader = result.stdout.split()
    assert origin == str(site / "pymysql" / "connections.pyc") and loader == "SourcelessFileLoader"


@pytest.mark.network
def test_alongside_bytecode_is_used_from_a_read_only_copy(tmp_path):
    site = extract_read_only(build(tmp_path).zip_path, tmp_path / "opt")
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import pymysql.connections; "
            "print(sys.modules['pymysql.connections'].__spec__.cached)")  # fmt: skip
    result = subprocess.run([sys.executable, "-I", "-S", "-B", "-v", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{site}/pymysql/__pycache__/connections.{HOST_TAG}.pyc matches {site}/pymysql/connections.py" in result.stderr
    assert "code object from" in result.stderr


@pytest.mark.network
def test_none_ships_no_bytecode(tmp_path):
    outcome = build(tmp_path, bytecode="none")
    assert not [n for n in names(outcome.zip_path) if n.endswith(".pyc")]
    assert "bytecode: none (recipe asks for source only)" in outcome.manifest.extra["notes"]


@pytest.mark.network
@pytest.mark.parametrize("mode", ["alongside", "only"])
def test_no_host_path_in_any_file_of_the_layer(tmp_path, mode):
    outcome = build(tmp_path, bytecode=mode)
    host_paths = [str(tmp_path), str(REPO), sys.prefix, os.path.realpath(sys.prefix), "/tmp/layerbuild-"]
    with zipfile.ZipFile(outcome.zip_path) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            for host in host_paths:
                assert host.encode() not in data, f"{name} contains the host path {host}"
        code = archive.read(next(n for n in archive.namelist() if n.endswith(("connections.pyc", f"connections.{HOST_TAG}.pyc"))))
    assert b"/opt/python/pymysql/connections.py" in code  # tracebacks on Lambda name the layer's real path


@pytest.mark.network
@pytest.mark.parametrize("mode", ["alongside", "only"])
def test_rebuilds_are_byte_identical(tmp_path, mode):
    # markupsafe: a C extension and sources that slimming removes, so slimming is part of what must repeat.
    first = build(tmp_path, out="one", bytecode=mode, packages=["pymysql", "markupsafe"])
    second = build(tmp_path, out="two", bytecode=mode, packages=["pymysql", "markupsafe"])
    assert any(note.startswith("slim: removed") and not note.startswith("slim: removed 0 ") for note in first.manifest.extra["notes"])
    assert first.manifest.sha256 == second.manifest.sha256
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()


@pytest.mark.network
def test_the_bytecode_cache_never_changes_the_layers_bytes(tmp_path, monkeypatch):
    """Restored .pyc and their cached deflated form (copied into the zip) give the zip a fresh compile gives."""
    warm = build(tmp_path, out="warm", packages=["pymysql", "markupsafe"])
    assert pyccache.pack_paths(pyccache.store_root())  # the cache holds this build's modules now
    again = build(tmp_path, out="again", packages=["pymysql", "markupsafe"])
    monkeypatch.setenv(pyccache.SWITCH_ENV, "off")
    cold = build(tmp_path, out="cold", packages=["pymysql", "markupsafe"])
    assert warm.zip_path.read_bytes() == again.zip_path.read_bytes() == cold.zip_path.read_bytes()


def fake_shim(folder: Path, version: str) -> None:
    """What a pyenv shim does for a version that is not selected: print an error, exit 127."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / f"python{version}"
    shim.write_text(f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)


@pytest.mark.network
def test_target_without_a_matching_interpreter_gets_a_note(tmp_path, monkeypatch, capsys):
    fake_shim(tmp_path / "bin", "3.14")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    bytecode.find_interpreter.cache_clear()
    messages = []
    recipe = parse_recipe({"name": "bc", "packages": ["pymysql"]}, "bc.yaml")
    try:
        outcome = build_target(recipe, make_target("3.14", "x86_64"), out_dir=tmp_path / "d", use_cache=False,
                               progress=lambda target, message: messages.append(message))  # fmt: skip
    finally:
        bytecode.find_interpreter.cache_clear()
    note = ("no bytecode: no local Python 3.14 interpreter to compile with (bytecode is only valid for the version "
            "that wrote it); install python3.14 (on PATH or with pyenv) to ship bytecode")  # fmt: skip
    assert note in outcome.manifest.extra["notes"]
    assert note in messages
    assert not [n for n in names(outcome.zip_path) if n.endswith(".pyc")]


def test_failing_shim_counts_as_absent(tmp_path, monkeypatch):
    fake_shim(tmp_path / "bin", "3.9")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    bytecode.find_interpreter.cache_clear()
    try:
        assert bytecode.find_interpreter("3.9") is None
        assert bytecode.find_interpreter(HOST).executable == sys.executable
    finally:
        bytecode.find_interpreter.cache_clear()


def make_site(root: Path) -> Path:
    site = root / "python"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = {'a', 'b', 'c'}\n")
    (site / "pkg" / "broken.py").write_text("def nope(:\n")
    (site / "pkg" / "data.txt").write_text("not code\n")
    dist = site / "pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "RECORD").write_text("pkg/__init__.py,sha256=x,23\npkg/broken.py,sha256=y,12\npkg/data.txt,sha256=z,9\n"
                                 "pkg-1.0.dist-info/RECORD,,\n")  # fmt: skip
    return site


def test_compile_tree_records_pyc_and_keeps_what_does_not_compile(tmp_path, monkeypatch):
    monkeypatch.setenv(pyccache.SWITCH_ENV, "off")  # both sites really compiled: the check below is about the compiler
    site = make_site(tmp_path / "a")
    result = bytecode.compile_tree(site, HOST, "alongside")
    assert result.compiled == 1 and result.failed == ["pkg/broken.py"]
    assert "1 files did not compile and stay source only" in result.note
    record = (site / "pkg-1.0.dist-info" / "RECORD").read_text().splitlines()
    assert record[:4] == ["pkg/__init__.py,sha256=x,23", "pkg/broken.py,sha256=y,12", "pkg/data.txt,sha256=z,9",
                          "pkg-1.0.dist-info/RECORD,,"]  # fmt: skip
    assert record[4].startswith(f"pkg/__pycache__/__init__.{HOST_TAG}.pyc,sha256=")
    # Set constants are marshalled in hash order: the compile must not depend on the hash seed.
    other = make_site(tmp_path / "b")
    bytecode.compile_tree(other, HOST, "alongside")
    pyc = f"pkg/__pycache__/__init__.{HOST_TAG}.pyc"
    assert (site / pyc).read_bytes() == (other / pyc).read_bytes()


def test_compile_tree_only_keeps_non_module_files(tmp_path):
    site = make_site(tmp_path)
    bytecode.compile_tree(site, HOST, "only")
    assert sorted(p.relative_to(site).as_posix() for p in (site / "pkg").iterdir()) == [
        "pkg/__init__.pyc", "pkg/broken.py", "pkg/data.txt"]  # fmt: skip
    record = (site / "pkg-1.0.dist-info" / "RECORD").read_text()
    assert "pkg/__init__.pyc,sha256=" in record and "pkg/__init__.py," not in record


# --- bytecode kept across builds (pyccache) ----------------------------------------------------------


def read_pack(path: Path) -> dict[bytes, bytes]:
    """{key: entry bytes} of one pack."""
    with open(path, "rb") as handle:
        index = pyccache.read_index(handle)
    data = path.read_bytes()
    return {key: data[start:start + length] for key, (start, length) in index.items()}


def write_pack(path: Path, entries: dict[bytes, bytes]) -> None:
    """A pack laid out as PackWriter lays it out (magic, entries, sorted index, trailer)."""
    body, rows, offset = [pyccache.MAGIC], [], len(pyccache.MAGIC)
    for key, blob in entries.items():
        body.append(blob)
        rows.append((key, offset, len(blob)))
        offset += len(blob)
    index = b"".join(pyccache._ROW.pack(*row) for row in sorted(rows))
    trailer = pyccache._TRAILER.pack(offset, len(rows), hashlib.sha256(index).digest(), pyccache.MAGIC)
    path.write_bytes(b"".join(body) + index + trailer)


def test_a_module_compiled_once_is_restored_not_recompiled(tmp_path):
    first = make_site(tmp_path / "first")
    bytecode.compile_tree(first, HOST, "alongside")
    pyc = f"pkg/__pycache__/__init__.{HOST_TAG}.pyc"
    fresh = (first / pyc).read_bytes()
    entry = lambda data: pyccache._encode(data)[0]  # noqa: E731 - header, deflated .pyc, sha256
    located = [(pack, key) for pack in pyccache.pack_paths(pyccache.store_root())
               for key, blob in read_pack(pack).items() if blob == entry(fresh)]  # fmt: skip
    assert len(located) == 1
    pack, key = located[0]
    entries = read_pack(pack)
    # Prove the next build takes the cached entry rather than compiling: plant a marker in it.
    write_pack(pack, {**entries, key: entry(fresh + b"marker")})
    second = make_site(tmp_path / "second")
    during = set(pyccache.pack_paths(pyccache.store_root()))
    result = bytecode.compile_tree(second, HOST, "alongside")
    assert (second / pyc).read_bytes() == fresh + b"marker"
    assert (first / pyc).read_bytes() == fresh  # copied, never linked: the first tree is untouched
    assert result.compiled == 1 and result.failed == ["pkg/broken.py"]  # what did not compile is tried again
    assert set(pyccache.pack_paths(pyccache.store_root())) == during  # nothing new compiled, no new pack
    # A damaged entry is not used: the module is compiled again and stored again (repaired).
    write_pack(pack, {**entries, key: fresh + b"bitrot" + bytes(32)})
    again = make_site(tmp_path / "again")
    bytecode.compile_tree(again, HOST, "alongside")
    assert (again / pyc).read_bytes() == fresh
    assert any(blob == entry(fresh) for p in pyccache.pack_paths(pyccache.store_root()) for blob in read_pack(p).values())
    # Another source, or the same source at another path (co_filename differs), is compiled afresh.
    third = make_site(tmp_path / "third")
    (third / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    (third / "pkg" / "copy.py").write_bytes((first / "pkg" / "__init__.py").read_bytes())
    result = bytecode.compile_tree(third, HOST, "alongside")
    assert (third / pyc).read_bytes() != fresh
    copy_pyc = (third / f"pkg/__pycache__/copy.{HOST_TAG}.pyc").read_bytes()
    assert b"/opt/python/pkg/copy.py" in copy_pyc and b"/opt/python/pkg/__init__.py" not in copy_pyc


@pytest.mark.parametrize("damage", ["truncated", "index", "not a pack"])
def test_a_damaged_pack_is_removed_and_its_modules_compiled_again(tmp_path, damage):
    root = tmp_path / "bytecode"
    first = make_site(tmp_path / "first")
    files = sorted(p for p in first.rglob("*.py"))
    identity = pyccache.interpreter_identity(sys.executable, HOST_TAG)
    missing, keys, _ = pyccache.restore(files, first, identity, HOST_TAG, "/opt/python", root)
    assert missing == files and len(keys) == len(files)  # an empty cache restores nothing
    bytecode._compile_files(bytecode.find_interpreter(HOST), first, files, 1, None)
    with pyccache.PackWriter(HOST_TAG, root) as writer:
        for source in files:
            writer.add(source, keys[source])
        pack = writer.finish()
    second = make_site(tmp_path / "second")
    restored = lambda: pyccache.restore(sorted(second.rglob("*.py")), second, identity, HOST_TAG, "/opt/python", root)  # noqa: E731
    assert len(restored()[0]) == 1  # only broken.py (it never compiled) is missing
    data = pack.read_bytes()
    pack.write_bytes({"truncated": data[:-5], "index": data[:-70] + bytes(10) + data[-60:], "not a pack": b"x" * 80}[damage])
    assert len(restored()[0]) == 2 and not pack.exists()
    assert not list(root.glob(".*.part"))  # and nothing half-written stays behind


def test_a_build_that_cannot_write_the_cache_still_builds(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    site = make_site(tmp_path / "site")
    files = sorted(site.rglob("*.py"))
    bytecode._compile_files(bytecode.find_interpreter(HOST), site, files, 1, None)
    with pyccache.PackWriter(HOST_TAG, blocked / "bytecode") as writer:
        kept = [writer.add(source, "00" * 32) for source in files]
        assert writer.finish() is None
    assert sum(1 for k in kept if k is not None) == 1  # the deflated forms still go to the zip writer


def test_restored_bytecode_is_byte_identical_to_compiled_and_the_switch_turns_it_off(tmp_path, monkeypatch):
    warm = make_site(tmp_path / "warm")
    bytecode.compile_tree(warm, HOST, "only")
    monkeypatch.setenv(pyccache.SWITCH_ENV, "off")
    poisoned = {}
    for pack in pyccache.pack_paths(pyccache.store_root()):
        poisoned[pack] = pack.read_bytes()
        write_pack(pack, {key: pyccache._encode(b"poison")[0] for key in read_pack(pack)})  # ignored while the cache is off
    cold = make_site(tmp_path / "cold")
    bytecode.compile_tree(cold, HOST, "only")
    assert (cold / "pkg" / "__init__.pyc").read_bytes() == (warm / "pkg" / "__init__.pyc").read_bytes()
    assert b"poison" not in (cold / "pkg" / "__init__.pyc").read_bytes()
    for pack, original in poisoned.items():
        pack.write_bytes(original)  # leave no poison for other tests sharing the session's cache


def test_bytecode_cache_key_covers_interpreter_path_and_source():
    base = pyccache.key_for("python-a", "/opt/python/m.py", b"x = 1\n")
    assert base == pyccache.key_for("python-a", "/opt/python/m.py", b"x = 1\n")
    assert len({base, pyccache.key_for("python-b", "/opt/python/m.py", b"x = 1\n"),
                pyccache.key_for("python-a", "/opt/python/n.py", b"x = 1\n"),
                pyccache.key_for("python-a", "/opt/python/m.py", b"x = 2\n"),
                pyccache.key_for("python-a", "/opt/python/m.p", b"yx = 1\n")}) == 5  # fmt: skip


def test_cached_and_fresh_bytecode_offer_the_zip_writer_exactly_its_own_deflate(tmp_path):
    from layerbuild.util.tree import COMPRESS_LEVEL
    from layerbuild.util.zipwriter import deflate_whole

    for name in ("fresh", "restored"):  # the first compiles and stores, the second restores
        site = make_site(tmp_path / name)
        result = bytecode.compile_tree(site, HOST, "only")
        raw = result.raw_sources["pkg/__init__.pyc"]
        data = (site / "pkg" / "__init__.pyc").read_bytes()
        assert (8, raw.payload) == deflate_whole(data, COMPRESS_LEVEL)
        assert raw.file_size == len(data) and raw.compress_size == len(raw.payload)


def test_the_streaming_compiler_writes_what_python_m_compileall_writes(tmp_path):
    """The compile processes call compileall.compile_file per module (so each .pyc can be cached while the rest
    compile); their bytes must be those of `python -m compileall -s SITE -p /opt/python` itself."""
    sources = {"pkg/__init__.py": "from .mod import f\n", "pkg/mod.py": "S = {'a', 'b', 'c'}\n\ndef f(x):\n    return x in S\n",
               "top.py": '"""doc"""\nimport pkg\nVALUE = frozenset(range(5))\n', "pkg/broken.py": "def (:\n"}  # fmt: skip
    sites = {}
    for label in ("ours", "compileall"):
        site = tmp_path / label / "python"
        for rel, text in sources.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(text, encoding="utf-8")
        sites[label] = site
    interpreter = bytecode.find_interpreter(HOST)
    files = sorted(sites["ours"].rglob("*.py"))
    reported = []
    output = bytecode._compile_files(interpreter, sites["ours"], files, 2, reported.append)
    subprocess.run([sys.executable, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
                    "-s", str(sites["compileall"]), "-p", "/opt/python", str(sites["compileall"])],
                   env=bytecode.compile_env(), capture_output=True, check=False)  # fmt: skip

    def pycs(site):
        return {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*.pyc")}

    assert pycs(sites["ours"]) == pycs(sites["compileall"])
    assert len(pycs(sites["ours"])) == 3  # broken.py has none
    assert sorted(reported) == files  # every module reported, the broken one too (its .pyc is simply absent)
    assert f"*** Error compiling '{sites['ours'] / 'pkg' / 'broken.py'}'" in output  # as compileall reports it


SET_CONSTANTS = 'WORDS = frozenset({"alpha", "beta", "gamma", "delta", "epsilon", "zeta"})\n\ndef f(x):\n    return x in {"eta", "theta", "iota", "kappa"}\n'


def _runtime_versions() -> list[str]:
    from layerbuild.model.runtimes import RUNTIMES

    return sorted({runtime.python for runtime in RUNTIMES.values()}, key=lambda v: tuple(map(int, v.split("."))))


@pytest.mark.parametrize("version", _runtime_versions())
def test_set_constants_compile_to_the_same_bytes_whatever_the_callers_hash_seed(tmp_path, monkeypatch, version):
    """Issue 21: 3.8-3.10 wrote set constants in hash order because `-I` dropped PYTHONHASHSEED=0."""
    if bytecode.find_interpreter(version) is None:
        pytest.skip(f"no python{version} on this machine")
    monkeypatch.setenv(pyccache.SWITCH_ENV, "off")  # empty caches: every module compiled afresh
    outputs = []
    for seed in ("1", "2", "random"):
        monkeypatch.setenv("PYTHONHASHSEED", seed)
        site = tmp_path / f"seed-{seed}"
        (site / "pkg").mkdir(parents=True)
        (site / "pkg" / "__init__.py").write_text(SET_CONSTANTS)
        bytecode.compile_tree(site, version, "alongside")
        outputs.append(sorted((p.name, p.read_bytes()) for p in site.rglob("*.pyc")))
    assert outputs[0], "nothing was compiled"
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.network
@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_requests_layers_for_older_runtimes_are_byte_identical_with_empty_caches(tmp_path, monkeypatch, version):
    """Issue 21: `build requests --python 3.10` gave a different sha256 each time with empty caches."""
    if bytecode.find_interpreter(version) is None:
        pytest.skip(f"no python{version} on this machine")
    monkeypatch.setenv(pyccache.SWITCH_ENV, "off")
    digests = set()
    for attempt in ("one", "two"):
        recipe = parse_recipe({"name": "rq", "packages": ["requests"]}, "rq.yaml")
        outcome = build_target(recipe, make_target(version, "x86_64"), out_dir=tmp_path / attempt, use_cache=False)
        digests.add(outcome.manifest.sha256)
    assert len(digests) == 1
