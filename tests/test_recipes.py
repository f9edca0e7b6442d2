"""Every shipped recipe, built for the host's runtime, imports from a read-only copy of python/."""

import os
import stat
import subprocess
import sys
import zipfile

import pytest

from conftest import HOST_PYTHON
from layerbuild.build import build_target
from layerbuild.recipe import list_recipe_names, load_recipe
from layerbuild.runtimes import RUNTIMES, make_target

pytestmark = [pytest.mark.network, pytest.mark.slow]


def make_read_only(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        os.chmod(dirpath, 0o555)


def import_in_fresh_interpreter(python_dir, modules):
    """-I -S: no site-packages, no user site, no PYTHON* variables: only the stdlib and the layer."""
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(python_dir)!r})\n"
        f"for name in {list(modules)!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__ is None or module.__file__.startswith({str(python_dir)!r}), module.__file__\n"
        "print('ok')\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(HOST_PYTHON not in RUNTIMES, reason=f"host Python {HOST_PYTHON} is not a Lambda runtime")
@pytest.mark.parametrize("name", list_recipe_names())
def test_shipped_recipe_imports_read_only(name, tmp_path):
    recipe = load_recipe(name)
    outcome = build_target(recipe, make_target(HOST_PYTHON, "x86_64"), out_dir=tmp_path / "dist")
    extracted = tmp_path / "opt"
    with zipfile.ZipFile(outcome.zip_path) as archive:
        archive.extractall(extracted)
    make_read_only(extracted)
    try:
        result = import_in_fresh_interpreter(extracted / "python", recipe.imports)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "ok"
        assert not list(extracted.rglob("__pycache__/*.cpython-*.pyc.*")), "interpreter wrote into the read-only layer"
    finally:
        for dirpath, dirnames, filenames in os.walk(extracted):
            os.chmod(dirpath, 0o755)
