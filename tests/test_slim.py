"""Slimming: tests/docs/sources out, RECORD kept consistent, debug symbols stripped, imports still work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from layerbuild.build import importscan, slim
from layerbuild.build.pipeline import build_target
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import make_target

HOST = "%d.%d" % sys.version_info[:2]
HOST_TAG = sys.implementation.cache_tag


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_layer(root: Path) -> Path:
    """A layer with a package whose tests are dead weight and one whose tests module is imported."""
    site = root / "python"
    write(site / "alpha" / "__init__.py", "from .core import answer\n")
    write(site / "alpha" / "core.py", "def answer():\n    return 42\n")
    write(site / "alpha" / "core.pyi", "def answer() -> int: ...\n")
    write(site / "alpha" / "speedups.c", "int x;\n")
    write(site / "alpha" / "speedups.pyx", "cdef int x\n")
    write(site / "alpha" / "include" / "alpha.h", "#define A 1\n")
    write(site / "alpha" / "tests" / "__init__.py")
    write(site / "alpha" / "tests" / "test_core.py", "import alpha\n")
    write(site / "alpha" / "docs" / "index.rst", "Alpha\n")
    write(site / "alpha" / "__pycache__" / "core.cpython-39.pyc", "old")
    write(site / "alpha" / "__pycache__" / f"core.{HOST_TAG}.pyc", "kept")
    write(site / "beta" / "__init__.py", "from . import tests\n")
    write(site / "beta" / "tests" / "__init__.py", "FIXTURE = 'needed at import time'\n")
    write(site / "gamma" / "__init__.py", "import gamma.test.helpers\n")
    write(site / "gamma" / "test" / "__init__.py")
    write(site / "gamma" / "test" / "helpers.py", "X = 1\n")
    write(site / "delta" / "__init__.py", "from delta.tests._helper import X  # a helper shipped inside tests\n")
    write(site / "delta" / "tests" / "__init__.py")
    write(site / "delta" / "tests" / "_helper.py", "from .common import Y as X\n")
    write(site / "delta" / "tests" / "common.py", "Y = 1\n")
    write(site / "delta" / "tests" / "test_big.py", "import delta\n")
    write(site / "delta" / "tests" / "data" / "big.json", "{}")
    write(site / "alpha-1.0.dist-info" / "RECORD", "\n".join([
        "alpha/__init__.py,sha256=a,1", "alpha/core.py,sha256=b,2", "alpha/core.pyi,sha256=c,3",
        "alpha/speedups.c,sha256=d,4", "alpha/speedups.pyx,sha256=e,5", "alpha/include/alpha.h,sha256=f,6",
        "alpha/tests/__init__.py,sha256=g,0", "alpha/tests/test_core.py,sha256=h,7",
        "alpha/docs/index.rst,sha256=i,6", "alpha-1.0.dist-info/RECORD,,"]) + "\n")  # fmt: skip
    return site


def files(site: Path) -> set[str]:
    return {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}


def import_ok(site: Path, *modules: str) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {str(site)!r})\n" + "".join(f"import {m}\n" for m in modules)
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, timeout=120)


def test_slim_removes_tests_docs_sources_and_foreign_bytecode(tmp_path):
    site = make_layer(tmp_path)
    result = slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    left = files(site)
    assert left == {
        "alpha/__init__.py", "alpha/core.py", f"alpha/__pycache__/core.{HOST_TAG}.pyc",
        "beta/__init__.py", "beta/tests/__init__.py",  # imported by beta: kept
        "gamma/__init__.py", "gamma/test/__init__.py", "gamma/test/helpers.py",  # imported by gamma: kept
        "delta/__init__.py", "delta/tests/__init__.py", "delta/tests/_helper.py", "delta/tests/common.py",  # needed part
        "alpha-1.0.dist-info/RECORD",
    }  # fmt: skip
    assert not (site / "alpha" / "include").exists()  # emptied directories are pruned
    assert sorted(result.removed) == sorted([
        "python/alpha/core.pyi", "python/alpha/speedups.c", "python/alpha/speedups.pyx",
        "python/alpha/include/alpha.h", "python/alpha/tests/__init__.py", "python/alpha/tests/test_core.py",
        "python/alpha/docs/index.rst", "python/alpha/__pycache__/core.cpython-39.pyc",
        "python/delta/tests/test_big.py", "python/delta/tests/data/big.json"])  # fmt: skip
    assert (site / "alpha-1.0.dist-info" / "RECORD").read_text() == (
        "alpha/__init__.py,sha256=a,1\nalpha/core.py,sha256=b,2\nalpha-1.0.dist-info/RECORD,,\n")
    assert result.summary().startswith("slim: removed 10 files (")
    proc = import_ok(site, "alpha", "beta", "gamma", "delta")
    assert proc.returncode == 0, proc.stderr


def test_keep_list_protects_runtime_testing_packages(tmp_path):
    site = tmp_path / "python"
    write(site / "numpy" / "__init__.py")
    write(site / "numpy" / "testing" / "__init__.py", "X = 1\n")
    write(site / "pandas" / "__init__.py")
    write(site / "pandas" / "_testing" / "__init__.py")
    write(site / "pandas" / "tests" / "__init__.py")
    slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    assert files(site) == {"numpy/__init__.py", "numpy/testing/__init__.py", "pandas/__init__.py", "pandas/_testing/__init__.py"}


def compile_extension(site: Path, debug: bool = True) -> Path:
    """A real CPython extension module with DWARF debug info, built by the host's gcc."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build an extension with debug info")
    source = write(site.parent / "src" / "native.c", """
#include <Python.h>
static PyObject *triple(PyObject *self, PyObject *arg) { return PyLong_FromLong(3 * PyLong_AsLong(arg)); }
static PyMethodDef methods[] = {{"triple", triple, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "native", NULL, -1, methods};
PyMODINIT_FUNC PyInit_native(void) { return PyModule_Create(&module); }
""")
    target = site / "deb" / ("native" + sysconfig.get_config_var("EXT_SUFFIX"))
    target.parent.mkdir(parents=True, exist_ok=True)
    write(site / "deb" / "__init__.py", "from .native import triple\n")
    args = ["gcc", "-shared", "-fPIC", "-O0", f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(target)]
    subprocess.run(args + (["-g3"] if debug else []), check=True, capture_output=True, timeout=120)
    rel = target.relative_to(site).as_posix()
    write(site / "deb-1.0.dist-info" / "RECORD", f"deb/__init__.py,sha256=a,1\n{rel},sha256=old,1\ndeb-1.0.dist-info/RECORD,,\n")
    return target


def section_names(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        return [s.name for s in elf.iter_sections()]


def dynamic_symbols(path: Path) -> set[str]:
    with open(path, "rb") as handle:
        return {s.name for s in ELFFile(handle).get_section_by_name(".dynsym").iter_symbols()}


@pytest.mark.skipif(slim.strip_tool("x86_64") is None, reason="needs binutils' strip on an x86_64 host")
def test_strip_removes_debug_info_and_keeps_the_module_importable(tmp_path):
    site = tmp_path / "python"
    extension = compile_extension(site)
    before = extension.stat().st_size
    symbols = dynamic_symbols(extension)
    assert any(name.startswith(".debug_") for name in section_names(extension))
    assert slim.elf_files_with_debug(tmp_path, "x86_64") == [extension]
    assert slim.elf_files_with_debug(tmp_path, "arm64") == []  # another machine's files are never touched

    result = slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    assert result.stripped == 1 and result.stripped_bytes == before - extension.stat().st_size > 0
    assert not any(name.startswith(".debug_") for name in section_names(extension))
    assert dynamic_symbols(extension) == symbols  # --strip-debug keeps what the loader needs
    record = (site / "deb-1.0.dist-info" / "RECORD").read_text()
    assert f"{extension.relative_to(site).as_posix()},sha256=" in record and "sha256=old" not in record
    assert f"{extension.stat().st_size}\n" in record
    proc = subprocess.run([sys.executable, "-I", "-S", "-B", "-c",
                           f"import sys; sys.path.insert(0, {str(site)!r}); import deb; print(deb.triple(14))"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
    assert slim.elf_files_with_debug(tmp_path, "x86_64") == []  # nothing left to strip: a second run rewrites nothing


def test_no_strip_for_the_architecture_leaves_files_and_says_so(tmp_path, monkeypatch):
    site = tmp_path / "python"
    extension = compile_extension(site)
    data = extension.read_bytes()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no strip of any kind on PATH
    result = slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    assert extension.read_bytes() == data
    assert result.notes == ["slim: 1 x86_64 ELF files keep their debug symbols: no strip for x86_64 installed "
                            "(x86_64-linux-gnu-strip or strip, Debian's binutils)"]  # fmt: skip


def test_extension_without_debug_info_is_not_rewritten(tmp_path):
    site = tmp_path / "python"
    extension = compile_extension(site, debug=False)
    subprocess.run(["strip", "--strip-debug", str(extension)], check=True, timeout=60)
    data = extension.read_bytes()
    result = slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    assert result.stripped == 0 and extension.read_bytes() == data


@pytest.mark.network
def test_slim_false_keeps_everything(tmp_path):
    def build(slim_on: bool):
        recipe = parse_recipe({"name": "sl", "packages": ["markupsafe"], "slim": slim_on, "bytecode": "none"}, "sl.yaml")
        return build_target(recipe, make_target(HOST, "x86_64"), out_dir=tmp_path / str(slim_on), use_cache=False)

    slimmed, full = build(True), build(False)
    with zipfile.ZipFile(full.zip_path) as archive:
        full_names = set(archive.namelist())
    with zipfile.ZipFile(slimmed.zip_path) as archive:
        slim_names = set(archive.namelist())
    dropped = full_names - slim_names
    assert dropped and all(n.endswith((".c", ".pyi", "/")) for n in dropped), dropped
    assert any(n.endswith("_speedups.c") for n in dropped) and any(n.endswith(".pyi") for n in dropped)
    assert slimmed.manifest.zipped_bytes < full.manifest.zipped_bytes
    assert not any(note.startswith("slim:") for note in full.manifest.extra.get("notes", []))


@pytest.mark.network
@pytest.mark.skipif(slim.strip_tool("arm64") is None, reason="needs aarch64-linux-gnu-strip (binutils-aarch64-linux-gnu)")
def test_arm64_libraries_lose_debug_sections_and_keep_their_dynamic_symbols(tmp_path):
    """Pillow's arm64 wheel bundles libraries with debug sections; only a strip that knows aarch64 may touch them."""
    def build(slim_on: bool):
        recipe = parse_recipe({"name": "pa", "packages": ["pillow"], "slim": slim_on, "bytecode": "none",
                               "architectures": ["arm64"]}, "pa.yaml")  # fmt: skip
        outcome = build_target(recipe, make_target(HOST, "arm64"), out_dir=tmp_path / str(slim_on), use_cache=False)
        dest = tmp_path / f"x-{slim_on}"
        with zipfile.ZipFile(outcome.zip_path) as archive:
            archive.extractall(dest)
        return outcome, dest

    slimmed, slim_dir = build(True)
    full, full_dir = build(False)
    assert slim.elf_files_with_debug(full_dir, "arm64"), "the wheel no longer ships debug sections: pick another"
    assert slim.elf_files_with_debug(slim_dir, "arm64") == []
    assert any(n.startswith("slim: removed") and "stripped debug symbols from" in n for n in slimmed.manifest.extra["notes"])
    for stripped in slim_dir.rglob("*.so*"):
        original = full_dir / stripped.relative_to(slim_dir)
        assert dynamic_symbols(stripped) == dynamic_symbols(original), stripped
    assert slimmed.manifest.unzipped_bytes < full.manifest.unzipped_bytes


@pytest.mark.parametrize("text, found", [
    ("from .tests import helper\n", True),
    ("import pkg.tests.data as d", True),
    ("from . import (\n    tests,\n)", True),
    ("x = __doc__  # docstring, testsuite, my_tests, tests_extra", False),
    ("tests", True),
    ("", False),
])
def test_only_whole_word_mentions_send_a_module_to_the_import_scan(text, found):
    assert importscan.mentions_word(text, "tests") is found


# ---- what the import scan must follow (each case: a tests/docs folder that kept code reaches) ------------------


def reach_layer(tmp_path: Path, files: dict[str, str]) -> tuple[Path, set[str]]:
    """Write files under python/, slim, return (site, files left)."""
    site = tmp_path / "python"
    for rel, text in files.items():
        write(site / rel, text)
    slim.slim_tree(tmp_path, "x86_64", HOST_TAG)
    return site, files_left(site)


def files_left(site: Path) -> set[str]:
    return {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}


def test_init_of_a_reached_package_is_followed_at_any_depth(tmp_path):
    """The boto3 case: client.py imports pkg.docs.docstring; pkg/docs/__init__.py imports pkg.docs.service."""
    site, left = reach_layer(tmp_path, {
        "pkg/__init__.py": "from pkg.client import make\n",
        "pkg/client.py": "from pkg.docs.docstring import Doc\n\ndef make():\n    return Doc()\n",
        "pkg/docs/__init__.py": "from pkg.docs.service import ServiceDocumenter\n",
        "pkg/docs/service.py": "from .sub.deep import X as ServiceDocumenter\n",
        "pkg/docs/sub/__init__.py": "from . import helpers\n",
        "pkg/docs/sub/helpers.py": "H = 1\n",
        "pkg/docs/sub/deep.py": "from ..shared import X\n",
        "pkg/docs/shared.py": "X = 1\n",
        "pkg/docs/docstring.py": "class Doc: pass\n",
        "pkg/docs/unused.py": "import pkg\n",
    })  # fmt: skip
    assert "pkg/docs/unused.py" not in left
    assert {"pkg/docs/service.py", "pkg/docs/sub/helpers.py", "pkg/docs/sub/deep.py", "pkg/docs/shared.py"} <= left
    assert import_ok(site, "pkg").returncode == 0, import_ok(site, "pkg").stderr


@pytest.mark.parametrize("importer", [
    "from pkg import tests\n",  # a submodule imported as a name
    "from pkg.tests import helper\n",
    "import importlib\nhelper = importlib.import_module('pkg.tests.helper')\n",
    "helper = __import__('pkg.tests.helper', fromlist=['x'])\n",
    "import importlib\nhelper = importlib.import_module('.tests.helper', __package__)\n",
    "try: import pkg.tests.helper\nexcept ImportError: pass\n",
    "import os; import pkg.tests.helper\n",
    "from pkg.tests import (\n    helper,  # the one we need\n)\n",
    "from pkg.tests \\\n    import helper\n",
])  # fmt: skip
def test_every_way_of_importing_is_followed(tmp_path, importer):
    site, left = reach_layer(tmp_path, {
        "pkg/__init__.py": importer,
        "pkg/tests/__init__.py": "",
        "pkg/tests/helper.py": "from .data_tools import load\n",
        "pkg/tests/data_tools.py": "def load(): pass\n",
        "pkg/tests/test_big.py": "import pkg\n",
    })  # fmt: skip
    assert "pkg/tests/test_big.py" not in left
    needed = ["pkg", "pkg.tests.helper"] if "helper" in importer else ["pkg", "pkg.tests"]
    assert import_ok(site, *needed).returncode == 0, import_ok(site, *needed).stderr


@pytest.mark.parametrize("reader", [
    "import os\nPATH = os.path.join(os.path.dirname(__file__), 'tests', 'data', 'table.json')\n",
    "from pathlib import Path\nPATH = Path(__file__).parent / 'tests' / 'data' / 'table.json'\n",
    "import pkgutil\nDATA = pkgutil.get_data(__name__, 'tests/data/table.json')\n",
    "from importlib import resources\nDATA = resources.files('pkg.tests.data').joinpath('table.json').read_text()\n",
    "from importlib import resources\nDATA = (resources.files(__package__) / 'tests/data/table.json').read_text()\n",
])  # fmt: skip
def test_data_files_code_opens_by_name_are_kept(tmp_path, reader):
    site, left = reach_layer(tmp_path, {
        "pkg/__init__.py": reader,
        "pkg/tests/__init__.py": "",
        "pkg/tests/test_x.py": "import pkg\n",
        "pkg/tests/data/__init__.py": "",
        "pkg/tests/data/table.json": "{}",
    })  # fmt: skip
    assert "pkg/tests/data/table.json" in left
    if "tests/data/table.json" in reader or "pkg.tests.data" in reader:  # precise: nothing else of tests is needed
        assert "pkg/tests/test_x.py" not in left
    assert import_ok(site, "pkg").returncode == 0, import_ok(site, "pkg").stderr


def test_names_computed_at_run_time_keep_what_they_may_reach(tmp_path):
    site, left = reach_layer(tmp_path, {
        # plugins named by a literal list, imported by a computed name: "tests" is one of them
        "alpha/__init__.py": "import importlib\nPLUGINS = ['core', 'tests']\n"
                             "def load(n):\n    return importlib.import_module(f'{__name__}.{n}')\n",
        "alpha/core.py": "",
        "alpha/tests/__init__.py": "",
        "alpha/tests/test_a.py": "",
        # a computed name whose literals never spell the folder: its tests go
        "beta/__init__.py": "import importlib\nSUBMODULES = ['core']\n"
                            "def __getattr__(n):\n    return importlib.import_module(f'beta.{n}')\n",
        "beta/core.py": "",
        "beta/tests/__init__.py": "",
        "beta/tests/test_b.py": "",
        # a module inside a reached tests package that imports computed names: all of it stays
        "gamma/__init__.py": "from gamma.tests import fixtures\n",
        "gamma/tests/__init__.py": "",
        "gamma/tests/fixtures.py": "import importlib, sys\nimportlib.import_module(sys.argv[0])\n",
        "gamma/tests/other.py": "",
    })  # fmt: skip
    assert {"alpha/tests/test_a.py", "gamma/tests/other.py"} <= left
    assert not any(p.startswith("beta/tests/") for p in left)


def test_conftest_files_go_and_what_only_they_import_with_them(tmp_path):
    site, left = reach_layer(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/conftest.py": "from pkg.tests.fixtures import big\n",
        "pkg/tests/__init__.py": "",
        "pkg/tests/fixtures.py": "big = 1\n",
    })  # fmt: skip
    assert left == {"pkg/__init__.py"}


def test_sources_the_code_opens_by_name_are_kept(tmp_path):
    site, left = reach_layer(tmp_path, {
        "cffi_like/__init__.py": "",
        "cffi_like/recompiler.py": "import os\nHEADER = os.path.join(os.path.dirname(__file__), '_cffi_include.h')\n",
        "cffi_like/_cffi_include.h": "#define X 1\n",
        "cffi_like/unused.h": "#define Y 1\n",
        "cffi_like/types.pyi": "X: int\n",
    })  # fmt: skip
    assert left == {"cffi_like/__init__.py", "cffi_like/recompiler.py", "cffi_like/_cffi_include.h"}


def test_doubtful_names_keep_the_whole_folder(tmp_path):
    """An import of a name in tests that is no .py file there (an extension module) keeps all of tests."""
    site, left = reach_layer(tmp_path, {
        "pkg/__init__.py": "from pkg.tests import _native_helper\n",
        "pkg/tests/__init__.py": "",
        "pkg/tests/_native_helper.cpython-311-x86_64-linux-gnu.so": "",
        "pkg/tests/test_x.py": "",
    })  # fmt: skip
    assert "pkg/tests/test_x.py" in left


# ---- on real packages: every module that imports before slimming imports after it ----------------------------

REAL_PACKAGES = ["boto3", "aws-lambda-powertools", "scikit-learn", "matplotlib", "pandas", "sqlalchemy", "pydantic"]
# Import every module of a top-level package found on disk (tests and docs folders aside), each in try/except;
# print {module: error or None} as JSON.
_IMPORT_ALL = r"""
import contextlib, importlib, io, json, os, sys, warnings
site, top = sys.argv[1], sys.argv[2]
sys.path.insert(0, site)
warnings.simplefilter("ignore")
names = []
for folder, dirs, files in os.walk(os.path.join(site, top)):
    dirs[:] = sorted(d for d in dirs if d not in ("tests", "test", "docs", "doc", "__pycache__"))
    package = os.path.relpath(folder, site).replace(os.sep, ".")
    for name in sorted(files):
        if name.endswith(".py") and name != "conftest.py" and not name.startswith("test_"):
            names.append(package if name == "__init__.py" else package + "." + name[:-3])
result = {}
for name in names:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            importlib.import_module(name)
        result[name] = None
    except BaseException as exc:
        result[name] = "%s: %s" % (type(exc).__name__, str(exc)[:200])
print(json.dumps(result))
"""


def import_every_module(site: Path, top: str) -> dict[str, str | None]:
    import json

    env = {"PATH": "/usr/bin:/bin", "HOME": str(site.parent), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(site.parent / "mpl")}
    done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", _IMPORT_ALL, str(site), top], capture_output=True,
                          text=True, timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.network
@pytest.mark.slow
def test_slimming_real_packages_breaks_no_import(tmp_path):
    """boto3/botocore, aws-lambda-powertools, scikit-learn, matplotlib, pandas, sqlalchemy, pydantic: every
    module that imports from the unslimmed tree imports from the slimmed one (about 2,000 modules)."""
    from layerbuild.backends.wheels.uv import run_uv, target_args

    target = make_target(HOST, "x86_64")
    full = tmp_path / "full" / "python"
    done = run_uv(["pip", "install", "--quiet", "--target", str(full), "--only-binary", ":all:", *target_args(target),
                   *REAL_PACKAGES], timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.rmtree(full / "bin", ignore_errors=True)
    slimmed_root = tmp_path / "slim"
    shutil.copytree(full, slimmed_root / "python", symlinks=True)
    result = slim.slim_tree(slimmed_root, "x86_64", HOST_TAG)
    removed_tests = [p for p in result.removed if "/tests/" in p]
    assert len(removed_tests) > 500, "slimming no longer removes the packages' test suites"  # it must still slim
    tops = ["boto3", "botocore", "aws_lambda_powertools", "sklearn", "scipy", "matplotlib", "pandas", "numpy",
            "sqlalchemy", "pydantic"]  # fmt: skip
    broken = {}
    for top in tops:
        before, after = import_every_module(full, top), import_every_module(slimmed_root / "python", top)
        assert sum(error is None for error in before.values()) > 5, (top, before)  # the comparison means something
        broken.update({m: after.get(m) for m, error in before.items() if error is None and after.get(m) is not None})
    assert not broken, broken
