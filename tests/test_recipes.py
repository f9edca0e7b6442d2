"""Every shipped recipe, built for the host's runtime, imports from a read-only copy of python/."""

import os
import stat
import subprocess
import sys
import zipfile

import pytest
from conftest import HOST_PYTHON

from layerbuild.build.pipeline import build_target
from layerbuild.model.recipe import list_recipe_names, load_recipe
from layerbuild.model.runtimes import RUNTIMES, make_target

pytestmark = [pytest.mark.network, pytest.mark.slow]


def make_read_only(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        os.chmod(dirpath, 0o555)


def import_in_fresh_interpreter(python_dir, modules, use: str = ""):
    """-I -S: no site-packages, no user site, no PYTHON* variables: only the stdlib and the layer. use: code run after."""
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(python_dir)!r})\n"
        f"for name in {list(modules)!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__ is None or module.__file__.startswith({str(python_dir)!r}), module.__file__\n"
        + use + "\nprint('ok')\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, env=env, timeout=300)


# What using each shipped recipe's layer means: real work, not only an import.
USES = {
    "cryptography": "from cryptography.fernet import Fernet\nf = Fernet(Fernet.generate_key())\n"
                    "assert f.decrypt(f.encrypt(b'secret')) == b'secret'",
    "lxml": "from lxml import etree\nroot = etree.fromstring(b'<a><b n=\"1\"/><b n=\"2\"/></a>')\n"
            "assert root.xpath('//b/@n') == ['1', '2']",
    "numpy": "import numpy as np\na = np.arange(12.0).reshape(3, 4)\nassert np.allclose(np.linalg.pinv(a) @ a @ np.linalg.pinv(a), "
             "np.linalg.pinv(a))",
    "pandas": "import pandas as pd\ndf = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n"
              "assert df.groupby('k')['v'].sum().to_dict() == {'a': 4, 'b': 2}\n"
              "assert str(pd.Timestamp('2024-03-10 12:00', tz='Europe/Berlin').tz_convert('UTC')) == '2024-03-10 11:00:00+00:00'",
    "pillow": "import io\nfrom PIL import Image, ImageDraw\nimage = Image.new('RGB', (64, 64), 'white')\n"
              "ImageDraw.Draw(image).line((0, 0, 63, 63), fill='red')\nbuffer = io.BytesIO()\n"
              "image.save(buffer, 'JPEG')\nassert Image.open(io.BytesIO(buffer.getvalue())).size == (64, 64)",
    "psycopg2-binary": "import psycopg2.extensions, psycopg2.extras\n"
                       "assert psycopg2.extensions.adapt(\"o'brien\").getquoted() == b\"'o''brien'\"\n"
                       "assert psycopg2.extras.Json({'a': 1}).dumps({'a': 1}) == '{\"a\": 1}'",
    "pydantic": "from pydantic import BaseModel, ValidationError\nclass Upload(BaseModel):\n    key: str\n    size: int\n"
                "assert Upload(key='k', size='3').size == 3\ntry:\n    Upload(key='k', size='x')\nexcept ValidationError:\n"
                "    pass\nelse:\n    raise AssertionError('no validation')",
    "pymysql": "import pymysql.converters\nassert pymysql.converters.escape_string(\"it's\") == \"it\\\\'s\"",
    "requests": "import requests\nprepared = requests.Request('GET', 'https://example.org/a b', params={'q': 'x y'}).prepare()\n"
                "assert prepared.url == 'https://example.org/a%20b?q=x+y'",
}


def test_every_shipped_recipe_has_a_use():
    assert set(USES) == set(list_recipe_names())


@pytest.mark.skipif(HOST_PYTHON not in RUNTIMES, reason=f"host Python {HOST_PYTHON} is not a Lambda runtime")
@pytest.mark.parametrize("name", list_recipe_names())
def test_shipped_recipe_is_verified_and_works_read_only(name, tmp_path):
    recipe = load_recipe(name)
    outcome = build_target(recipe, make_target(HOST_PYTHON, "x86_64"), out_dir=tmp_path / "dist")
    assert outcome.manifest.verified is True, outcome.manifest.verification
    assert set(recipe.imports) <= set(outcome.manifest.verification["modules"])
    extracted = tmp_path / "opt"
    with zipfile.ZipFile(outcome.zip_path) as archive:
        archive.extractall(extracted)
    make_read_only(extracted)
    try:
        result = import_in_fresh_interpreter(extracted / "python", recipe.imports, USES[name])
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "ok"
        assert not list(extracted.rglob("__pycache__/*.cpython-*.pyc.*")), "interpreter wrote into the read-only layer"
    finally:
        for dirpath, dirnames, filenames in os.walk(extracted):
            os.chmod(dirpath, 0o755)
