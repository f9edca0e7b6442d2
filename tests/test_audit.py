"""layerbuild audit: real layers built from PyPI pass; hand-made broken layers fail with the right rule id.

Broken layers are made from real parts: ELF files compiled on the host with gcc (test_elf.compile_shared),
a real aarch64 extension module out of an arm64 numpy build, real numpy modules renamed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import tree_snapshot
from test_elf import (
    HOST_ARCH,
    PLAIN_SOURCE,
    PTHREAD_SOURCE,
    compile_shared,
    host_glibc,
    needs_gcc,
)

from layerbuild.audit.elf import ElfFacts, read_elf_facts
from layerbuild.audit.rules import FileFact, audit_files
from layerbuild.build.pipeline import build_target
from layerbuild.errors import AuditError
from layerbuild.limits import DIRECT_UPLOAD_LIMIT, UNZIPPED_LIMIT
from layerbuild.model.recipe import load_recipe, parse_recipe
from layerbuild.model.runtimes import make_target
from layerbuild.util.safezip import RATIO_MIN_BYTES

REPORT_KEYS = {"target", "ok", "errors", "warnings", "sizes", "largest_packages"}
FINDING_KEYS = {"rule", "path", "message"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Real layers from PyPI, built as `layerbuild build` does (the audit runs inside the build)."""
    out = tmp_path_factory.mktemp("built")
    layers = {}
    for name, python, arch in (("pymysql", "3.12", "x86_64"), ("numpy", "3.12", "x86_64"), ("numpy", "3.12", "arm64")):
        outcome = build_target(load_recipe(name), make_target(python, arch), backend="wheels", out_dir=out, use_cache=False)
        layers[f"{name}-{python}-{arch}"] = outcome
    return layers


def write_zip(path: Path, files: dict[str, bytes], stored: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def zip_contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def audit_json(invoke, path: Path, *flags) -> tuple[int, dict]:
    result = invoke("audit", path, *flags, "--json")
    return result.exit_code, json.loads(result.stdout)


def rules(findings: list[dict]) -> set[str]:
    return {f["rule"] for f in findings}


# --- real layers pass -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["pymysql-3.12-x86_64", "numpy-3.12-x86_64", "numpy-3.12-arm64"])
def test_real_built_layers_pass_and_record_the_audit(built, invoke, key):
    outcome = built[key]
    assert outcome.manifest.extra["audit"] == {"ok": True, "errors": 0, "warnings": []}
    on_disk = json.loads(outcome.manifest_path.read_text())
    assert on_disk["extra"]["audit"]["ok"] is True
    result = invoke("audit", outcome.zip_path)  # target from the manifest beside the zip
    assert result.exit_code == 0, result.output
    assert f"for {outcome.target.slug}: ok, 0 warning(s)" in result.stdout
    assert "largest packages (unzipped):" in result.stdout
    assert key.split("-")[0] in result.stdout


def test_json_schema(built, invoke):
    code, data = audit_json(invoke, built["numpy-3.12-x86_64"].zip_path)
    assert code == 0
    assert set(data) == REPORT_KEYS
    assert data["target"] == "python3.12-x86_64" and data["ok"] is True
    assert data["errors"] == [] and data["warnings"] == []
    assert data["sizes"]["unzipped_bytes"] == built["numpy-3.12-x86_64"].manifest.unzipped_bytes
    assert data["sizes"]["zipped_bytes"] == built["numpy-3.12-x86_64"].manifest.zipped_bytes
    assert data["sizes"]["unzipped_limit"] == UNZIPPED_LIMIT and data["sizes"]["direct_upload_limit"] == DIRECT_UPLOAD_LIMIT
    names = [p["name"] for p in data["largest_packages"]]
    assert 1 <= len(names) <= 10 and {"numpy", "numpy.libs"} <= set(names)
    sizes = [p["unzipped_bytes"] for p in data["largest_packages"]]
    assert sizes == sorted(sizes, reverse=True)


def test_flags_override_the_manifest(built, invoke):
    code, data = audit_json(invoke, built["numpy-3.12-x86_64"].zip_path, "--arch", "arm64")
    assert code == 1 and data["target"] == "python3.12-arm64"
    assert {"elf-arch", "abi-tag"} == rules(data["errors"])
    first = next(f for f in data["errors"] if f["rule"] == "elf-arch")
    assert first["path"] in first["message"] and "x86_64" in first["message"] and "aarch64" in first["message"]


def test_x86_64_numpy_on_python311_fails_on_glibc_and_abi_and_warns_bytecode(built, invoke):
    # numpy 2.3+ needs glibc 2.27+: not for Amazon Linux 2; its cpython-312 modules do not load on 3.11.
    code, data = audit_json(invoke, built["numpy-3.12-x86_64"].zip_path, "--python", "3.11")
    assert code == 1
    assert {"abi-tag", "glibc-version"} <= rules(data["errors"])
    glibc = next(f for f in data["errors"] if f["rule"] == "glibc-version")
    assert "up to GLIBC_2.26" in glibc["message"] and "Amazon Linux 2" in glibc["message"]
    assert rules(data["warnings"]) == {"foreign-bytecode"}


# --- hand-made broken layers ----------------------------------------------------------------------


def test_wrong_arch_so_in_x86_64_layer(built, invoke, tmp_path):
    arm = zip_contents(built["numpy-3.12-arm64"].zip_path)
    module = next(n for n in arm if n.endswith("aarch64-linux-gnu.so"))
    files = zip_contents(built["pymysql-3.12-x86_64"].zip_path)
    files["python/foreign.so"] = arm[module]  # plain name: only the machine is wrong
    path = write_zip(tmp_path / "mixed.zip", files)
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 1
    assert data["errors"] == [{"rule": "elf-arch", "path": "python/foreign.so", "message":
                               "python/foreign.so is built for aarch64; a x86_64 layer needs x86_64 ELF files"}]  # fmt: skip
    result = invoke("audit", path, "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and "error [elf-arch] python/foreign.so" in result.stdout


@needs_gcc
def test_too_new_glibc_symbol(invoke, tmp_path):
    if host_glibc() < (2, 34):
        pytest.skip("the host glibc is older than 2.34: cannot link a GLIBC_2.34 symbol")
    so = compile_shared(tmp_path, "_threads.so", PTHREAD_SOURCE)  # pthread_create@GLIBC_2.34
    assert read_elf_facts(so.read_bytes()).max_required("GLIBC") == (2, 34)
    path = write_zip(tmp_path / "threads.zip", {"python/_threads.so": so.read_bytes()})
    code, data = audit_json(invoke, path, "--python", "3.11", "--arch", HOST_ARCH)
    assert code == 1 and data["errors"] == [{"rule": "glibc-version", "path": "python/_threads.so", "message":
        "python/_threads.so requires GLIBC_2.34 from libc.so.6, but python3.11 runs on Amazon Linux 2 whose glibc "
        "provides up to GLIBC_2.26"}]  # fmt: skip
    # The boundary: GLIBC_2.34 exactly is within Amazon Linux 2023's glibc.
    assert audit_json(invoke, path, "--python", "3.12", "--arch", HOST_ARCH)[0] == 0


@needs_gcc
def test_glibc_newer_than_al2023(invoke, tmp_path):
    if host_glibc() < (2, 36):
        pytest.skip("the host glibc is older than 2.36: cannot link arc4random@GLIBC_2.36")
    so = compile_shared(tmp_path, "_rand.so", "#include <stdlib.h>\nunsigned r(void) { return arc4random(); }\n")
    path = write_zip(tmp_path / "rand.zip", {"python/_rand.so": so.read_bytes()})
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", HOST_ARCH)
    assert code == 1 and rules(data["errors"]) == {"glibc-version"}
    assert "requires GLIBC_2.36" in data["errors"][0]["message"] and "up to GLIBC_2.34" in data["errors"][0]["message"]


def test_wrong_abi_tag(built, invoke, tmp_path):
    files = zip_contents(built["numpy-3.12-x86_64"].zip_path)
    module = next(n for n in files if n.endswith("_multiarray_umath.cpython-312-x86_64-linux-gnu.so"))
    renamed = module.replace("cpython-312", "cpython-311")
    files[renamed] = files.pop(module)
    path = write_zip(tmp_path / "renamed.zip", files)
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 1
    assert data["errors"] == [{"rule": "abi-tag", "path": renamed, "message":
                               f"{renamed} is an extension module for cpython-311-x86_64-linux-gnu; python3.12 on x86_64 "
                               "only loads .cpython-312-x86_64-linux-gnu.so, .abi3.so or plain .so"}]  # fmt: skip


@needs_gcc
def test_missing_shared_library_and_where_it_may_live(invoke, tmp_path):
    lib = compile_shared(tmp_path, "libnotthere.so", PLAIN_SOURCE, "-Wl,-soname,libnotthere.so")
    ext = compile_shared(tmp_path, "_uses.so", PLAIN_SOURCE, f"-L{tmp_path}", "-Wl,--no-as-needed", "-lnotthere",
                         "-Wl,-rpath,$ORIGIN/../mypkg.libs")  # fmt: skip
    target = ("--python", "3.12", "--arch", HOST_ARCH)
    path = write_zip(tmp_path / "missing.zip", {"python/mypkg/_uses.so": ext.read_bytes()})
    code, data = audit_json(invoke, path, *target)
    assert code == 1 and rules(data["errors"]) == {"missing-library"}
    message = data["errors"][0]["message"]
    assert message.startswith("python/mypkg/_uses.so needs libnotthere.so, which is neither in the layer")
    assert "python/mypkg.libs/" in message and "Amazon Linux 2023" in message
    # The same library in lib/ (/opt/lib, on LD_LIBRARY_PATH) or the RUNPATH folder resolves it.
    for where in ("lib/libnotthere.so", "python/mypkg.libs/libnotthere.so"):
        ok = write_zip(tmp_path / "ok.zip", {"python/mypkg/_uses.so": ext.read_bytes(), where: lib.read_bytes()})
        code, data = audit_json(invoke, ok, *target)
        assert (code, data["errors"]) == (0, []), where


def test_oversize_layer(invoke, tmp_path):
    # Entries just under safezip's ratio threshold: zeros compress ~1000:1, so the zip stays tiny
    # while the unzipped total passes Lambda's limit (and stays under safezip's own 2x cap).
    chunk = RATIO_MIN_BYTES - 1
    count = UNZIPPED_LIMIT // chunk + 1
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            archive.writestr(f"python/blobs/zeros{index:02d}.bin", bytes(chunk))
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 1 and rules(data["errors"]) == {"unzipped-size"}
    assert data["sizes"]["unzipped_bytes"] == count * chunk > UNZIPPED_LIMIT
    assert f"{count * chunk:,} bytes" in data["errors"][0]["message"]
    assert data["largest_packages"] == [{"name": "blobs", "unzipped_bytes": count * chunk}]


def test_zip_over_direct_upload_limit_warns_about_s3(invoke, tmp_path):
    path = write_zip(tmp_path / "large.zip", {"python/blob.bin": os.urandom(DIRECT_UPLOAD_LIMIT + 1)}, stored=True)
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 0 and data["ok"] is True
    assert rules(data["warnings"]) == {"zipped-size"}
    assert "layerbuild publish --s3-bucket" in data["warnings"][0]["message"]


def test_foreign_bytecode_is_a_warning(built, invoke, tmp_path):
    files = zip_contents(built["pymysql-3.12-x86_64"].zip_path)
    files["python/pymysql/__pycache__/old.cpython-311.pyc"] = b"\x00" * 64
    # A sourceless .pyc without a tag: recognised by its magic number (this interpreter's).
    host = "%d.%d" % sys.version_info[:2]
    files["python/legacy.pyc"] = importlib.util.MAGIC_NUMBER + b"\x00" * 12
    path = write_zip(tmp_path / "pyc.zip", files)
    target = "3.13" if host == "3.12" else "3.12"
    code, data = audit_json(invoke, path, "--python", target, "--arch", "x86_64")
    assert code == 0
    messages = {f["path"]: f["message"] for f in data["warnings"]}
    assert rules(data["warnings"]) == {"foreign-bytecode"}
    assert "compiled for Python 3.11" in messages["python/pymysql/__pycache__/old.cpython-311.pyc"]
    assert f"compiled for Python {host}" in messages["python/legacy.pyc"]


def test_bad_layout_is_a_warning(built, invoke, tmp_path):
    files = zip_contents(built["pymysql-3.12-x86_64"].zip_path)
    files["share/readme.txt"] = b"hello\n"
    files["python/lib/python3.11/site-packages/six.py"] = b"x = 1\n"
    path = write_zip(tmp_path / "layout.zip", files)
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 0 and rules(data["warnings"]) == {"layout"}
    paths = sorted(f["path"] for f in data["warnings"])
    assert paths == ["python/lib/python3.11/site-packages/six.py", "share/readme.txt"]
    assert any("no search path" in f["message"] for f in data["warnings"])


@pytest.mark.parametrize("prefix", ["", "site-packages/"])
def test_packages_at_the_zip_root_are_an_error_with_the_fix(built, invoke, tmp_path, prefix):
    """The most common tutorial mistake: pymysql/... (or a venv's site-packages/...) instead of python/pymysql/..."""
    moved = {(prefix + name[len("python/"):] if name.startswith("python/") else name): data
             for name, data in zip_contents(built["pymysql-3.12-x86_64"].zip_path).items()}  # fmt: skip
    path = write_zip(tmp_path / "root.zip", moved)
    code, data = audit_json(invoke, path, "--python", "3.12", "--arch", "x86_64")
    assert code == 1 and data["ok"] is False
    assert rules(data["errors"]) == {"python-outside-python"}
    message = data["errors"][0]["message"]
    assert "put packages under python/" in message and f"python/{(prefix or 'pymysql/').rstrip('/')}/" in message
    result = invoke("audit", path, "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and "error [python-outside-python]" in result.output


# --- rule logic on facts (what zips cannot easily carry) ------------------------------------------


def _elf(**fields) -> ElfFacts:
    return ElfFacts(machine="x86_64", elf_class=64, **fields)


def test_glibcxx_checked_against_os_libstdcxx_unless_the_layer_ships_one():
    target = make_target("3.11", "x86_64")  # Amazon Linux 2: GLIBCXX_3.4.24, CXXABI_1.3.11
    ext = FileFact("python/pkg/_ext.so", 100, elf=_elf(needed=("libstdc++.so.6",),
                   requires={"libstdc++.so.6": ("GLIBCXX_3.4.26", "CXXABI_1.3.12")}))  # fmt: skip
    report = audit_files([ext], target, 100)
    assert [(f.rule, f.path) for f in report.errors] == [("cxxabi-version", ext.path), ("glibcxx-version", ext.path)]
    assert "up to GLIBCXX_3.4.24" in report.errors[1].message
    # A vendored libstdc++ found through RPATH is the one loaded: checked against its own versions.
    vendored = FileFact("python/pkg.libs/libstdc++-abc.so.6.0.28", 100,
                        elf=_elf(soname="libstdc++-abc.so.6.0.28", defines=("GLIBCXX_3.4.26", "CXXABI_1.3.12")))  # fmt: skip
    ext2 = FileFact("python/pkg/_ext.so", 100, elf=_elf(needed=("libstdc++-abc.so.6.0.28",), rpath=("$ORIGIN/../pkg.libs",),
                    requires={"libstdc++-abc.so.6.0.28": ("GLIBCXX_3.4.26", "CXXABI_1.3.12")}))  # fmt: skip
    assert audit_files([ext2, vendored], target, 200).ok
    too_old = FileFact(vendored.path, 100, elf=_elf(soname=vendored.elf.soname, defines=("GLIBCXX_3.4.21",)))
    report = audit_files([ext2, too_old], target, 200)
    assert {f.rule for f in report.errors} == {"glibcxx-version", "cxxabi-version"}
    assert "the layer's copy python/pkg.libs/libstdc++-abc.so.6.0.28 provides up to GLIBCXX_3.4.21" in report.errors[1].message


def test_layer_lib_libstdcxx_loses_to_the_os_copy_on_ld_library_path():
    # /lib64 precedes /opt/lib on Lambda's LD_LIBRARY_PATH: without RPATH the OS's libstdc++ is loaded.
    target = make_target("3.11", "x86_64")
    ext = FileFact("python/_ext.so", 1, elf=_elf(needed=("libstdc++.so.6",), requires={"libstdc++.so.6": ("GLIBCXX_3.4.30",)}))
    shipped = FileFact("lib/libstdc++.so.6", 1, elf=_elf(soname="libstdc++.so.6", defines=("GLIBCXX_3.4.30",)))
    assert [f.rule for f in audit_files([ext, shipped], target, 2).errors] == ["glibcxx-version"]


def test_libpython_of_the_target_resolves_from_the_runtime():
    target = make_target("3.12", "x86_64")
    ext = FileFact("python/_ext.so", 1, elf=_elf(needed=("libpython3.12.so.1.0",)))
    assert audit_files([ext], target, 1).ok
    other = FileFact("python/_ext.so", 1, elf=_elf(needed=("libpython3.11.so.1.0",)))
    assert [f.rule for f in audit_files([other], target, 1).errors] == ["missing-library"]


def test_al2_and_al2023_have_their_own_openssl():
    for python, good, bad in (("3.11", "libssl.so.10", "libssl.so.3"), ("3.12", "libssl.so.3", "libssl.so.10")):
        target = make_target(python, "x86_64")
        assert audit_files([FileFact("python/_ssl.so", 1, elf=_elf(needed=(good,)))], target, 1).ok
        report = audit_files([FileFact("python/_ssl.so", 1, elf=_elf(needed=(bad,)))], target, 1)
        assert [f.rule for f in report.errors] == ["missing-library"]


# --- the audit inside builds, and bad input --------------------------------------------------------


def _wheel_with_missing_library(tmp_path: Path) -> bytes:
    """A mis-tagged wheel (py3-none-any) whose extension needs a library nobody ships."""
    lib = compile_shared(tmp_path, "libnotthere.so", PLAIN_SOURCE, "-Wl,-soname,libnotthere.so")
    ext = compile_shared(tmp_path, "_native.so", PLAIN_SOURCE, f"-L{lib.parent}", "-Wl,--no-as-needed", "-lnotthere")
    files = {"badlib/__init__.py": b"", "badlib/_native.so": ext.read_bytes(),
             "badlib-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: badlib\nVersion: 1.0\n",
             "badlib-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}  # fmt: skip
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files["badlib-1.0.dist-info/RECORD"] = ("\n".join(record + ["badlib-1.0.dist-info/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@needs_gcc
def test_build_fails_when_its_layer_fails_the_audit(httpserver_ipv4, tmp_path):
    wheel = _wheel_with_missing_library(tmp_path)
    name = "badlib-1.0-py3-none-any.whl"
    sha = hashlib.sha256(wheel).hexdigest()
    httpserver_ipv4.expect_request("/simple/badlib/").respond_with_data(
        f'<html><body><a href="/files/{name}#sha256={sha}">{name}</a></body></html>', content_type="text/html")
    httpserver_ipv4.expect_request(f"/files/{name}").respond_with_data(wheel, content_type="application/octet-stream")
    recipe = parse_recipe({"name": "badlib", "packages": ["badlib==1.0"], "index_url": httpserver_ipv4.url_for("/simple"),
                           "bytecode": "none"}, "badlib.yaml")  # fmt: skip
    out = tmp_path / "dist"
    with pytest.raises(AuditError) as caught:
        build_target(recipe, make_target("3.12", HOST_ARCH), backend="wheels", out_dir=out, use_cache=False)
    message = str(caught.value)
    assert message.startswith(f"python3.12-{HOST_ARCH}: the built layer fails the audit with 1 error(s), the first [missing-library]")
    assert "python/badlib/_native.so needs libnotthere.so" in message and "nothing was published" in message
    assert tree_snapshot(out) == {}  # no zip, no manifest, no temp file


def test_no_target_no_manifest_is_one_line(built, invoke, tmp_path):
    copy = tmp_path / "loose.zip"
    copy.write_bytes(built["pymysql-3.12-x86_64"].zip_path.read_bytes())
    result = invoke("audit", copy)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {copy}: no layerbuild manifest beside the zip (loose.json) to take the target from; "
                             "pass --python X.Y and --arch x86_64|arm64\n")  # fmt: skip
    assert invoke("audit", copy, "--python", "3.12", "--arch", "x86_64").exit_code == 0


def test_bad_arguments_are_one_line(invoke, tmp_path):
    result = invoke("audit", tmp_path / "nope.zip", "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and result.stderr == f"error: {tmp_path / 'nope.zip'}: no such file (give the path of a layer zip)\n"
    path = write_zip(tmp_path / "ok.zip", {"python/m.py": b""})
    result = invoke("audit", path, "--python", "3.21", "--arch", "x86_64")
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown Python version '3.21'")
    result = invoke("audit", path, "--python", "3.12", "--arch", "sparc")
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown architecture 'sparc'")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    result = invoke("audit", tmp_path / "bad.zip", "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {tmp_path / 'bad.zip'}: not a zip archive")
    (tmp_path / "bad.json").write_text("{not json")
    result = invoke("audit", tmp_path / "bad.zip")
    assert result.exit_code == 1 and "not a layerbuild manifest" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_hostile_zip_is_refused_in_one_line(invoke, tmp_path):
    path = write_zip(tmp_path / "evil.zip", {"python/../../evil.py": b"boom"})
    result = invoke("audit", path, "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and "climbs out of the layer" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_build_audit_turns_warnings_into_notes_and_the_manifest_summary(tmp_path):
    from layerbuild.audit.facts import audit_built_layer, read_tree_facts

    (tmp_path / "tree" / "python").mkdir(parents=True)
    (tmp_path / "tree" / "docs").mkdir()
    (tmp_path / "tree" / "python" / "ok.py").write_bytes(b"")
    (tmp_path / "tree" / "docs" / "readme.txt").write_bytes(b"hello")
    notes: list[str] = []
    summary = audit_built_layer(read_tree_facts(tmp_path / "tree"), make_target("3.12", "x86_64"), 100, notes)
    assert summary["ok"] is True and summary["errors"] == 0
    assert [w["rule"] for w in summary["warnings"]] == ["layout"]
    assert notes == ["audit warning [layout] docs/readme.txt: 1 file(s) under docs/, which Lambda puts on no search path "
                     "(use python/, lib/ or bin/)"]  # fmt: skip


@needs_gcc
def test_tree_facts_equal_the_facts_read_back_from_the_zip(tmp_path):
    """A build audits the tree while zipping it: what it sees must be what the zip holds."""
    from layerbuild.audit.facts import read_layer_facts, read_tree_facts
    from layerbuild.util.tree import write_deterministic_zip

    root = tmp_path / "tree"
    (root / "python" / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "python" / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "python" / "pkg" / "__pycache__" / "__init__.cpython-312.pyc").write_bytes(b"\xcb\x0d\r\n" + b"\0" * 12)
    (root / "python" / "pkg" / "tiny").write_bytes(b"ab")
    (root / "python" / "pkg" / "broken.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"\xff" * 40)
    so = compile_shared(tmp_path, "libthreads.so", PTHREAD_SOURCE, "-pthread")
    (root / "python" / "pkg" / "_threads.so").write_bytes(so.read_bytes())
    (root / "lib" / "libthreads.so").symlink_to("../python/pkg/_threads.so")  # zipped as the file it names
    write_deterministic_zip(root, tmp_path / "layer.zip")
    from_zip = sorted(read_layer_facts(tmp_path / "layer.zip").files, key=lambda f: f.path)
    from_tree = sorted(read_tree_facts(root), key=lambda f: f.path)
    assert from_tree == from_zip
    assert {f.path for f in from_tree if f.elf} == {"lib/libthreads.so", "python/pkg/_threads.so"}
    assert [f.path for f in from_tree if f.elf_error] == ["python/pkg/broken.so"]
