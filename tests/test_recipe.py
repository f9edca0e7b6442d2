"""Recipe validation: every bad input gives one line naming the file and field, exit 1, nothing in dist/."""

import subprocess
import sys

import pytest
from conftest import tree_snapshot

from layerbuild.errors import RecipeError
from layerbuild.model.recipe import list_recipe_names, load_recipe, parse_recipe

SHIPPED = ["cryptography", "lxml", "numpy", "pandas", "pillow", "psycopg2-binary", "pydantic", "pymysql", "requests"]

BAD_RECIPES = [
    # (yaml text, expected fragments)
    ("name: x\npackges: [pymysql]\n", ["unknown field 'packges'", "did you mean 'packages'", "valid fields:"]),
    ("name: x\npackages: pymysql\n", ["field 'packages'", "must be a list of strings, got a string"]),
    ("name: x\npackages: []\n", ["field 'packages'", "is required"]),
    ("name: x\npackages: ['pymysql==']\n", ["field 'packages[0]'", "invalid requirement 'pymysql=='", "PEP 508"]),
    ("name: x\npackages: ['pymysql', {a: 1}]\n", ["field 'packages[1]'", "must be a string, got a mapping"]),
    ("name: x\npackages: [pymysql, PyMySQL]\n", ["field 'packages[1]'", "listed twice"]),
    ("name: x\npackages: [pymysql]\npython: ['3.7']\n", ["field 'python[0]'", "unknown Python version '3.7'", "3.8, 3.9, 3.10, 3.11, 3.12, 3.13, 3.14"]),
    ("name: x\npackages: [pymysql]\npython: [3.10]\n", ["field 'python[0]'", "quote versions"]),
    ("name: x\npackages: [pymysql]\narchitectures: [amd65]\n", ["field 'architectures[0]'", "unknown architecture 'amd65'", "x86_64, arm64"]),
    ("name: x\npackages: [pymysql]\narchitectures: {a: b}\n", ["field 'architectures'", "must be a list of strings"]),
    ("packages: [pymysql]\n", ["field 'name'", "is required"]),
    ("name: My Layer\npackages: [pymysql]\n", ["field 'name'", "invalid value 'My Layer'", "lowercase letters"]),
    ("name: x\npackages: [pymysql]\nexclude: ['../etc/*']\n", ["field 'exclude[0]'", "relative glob"]),
    ("name: x\npackages: [pymysql]\nindex_url: pypi.org/simple\n", ["field 'index_url'", "http(s)://"]),
    ("name: x\npackages: [pymysql]\nbackend: dokker\n", ["field 'backend'", "did you mean 'docker'"]),
    ("name: x\npackages: [pymysql]\nbytecode: sometimes\n", ["field 'bytecode'", "alongside, only, none"]),
    ("name: x\npackages: [pymysql]\nslim: 'yes'\n", ["field 'slim'", "true or false"]),
    ("name: x\npackages: [pymysql]\nbuild_env: {AWS_SECRET_ACCESS_KEY: x}\n", ["field 'build_env.AWS_SECRET_ACCESS_KEY'", "never passed"]),
    ("name: x\npackages: [pymysql]\nlicense: 12\n", ["field 'license'", "must be a string"]),
    ("name: x\npackages: [pymysql]\ndescription: " + "d" * 300 + "\n", ["field 'description'", "at most 256"]),
    ("name: x\npackages: [pymysql]\nsystem_packages: ['rm -rf /']\n", ["field 'system_packages[0]'", "invalid value"]),
    ("- just\n- a list\n", ["a recipe must be a mapping", "got a list"]),
    ("name: x\npackages: [pymysql\n", ["not valid YAML", "line"]),
    ("", ["a recipe must be a mapping", "got nothing"]),
]


@pytest.mark.parametrize("text,fragments", BAD_RECIPES, ids=[f[0] for _, f in BAD_RECIPES])
def test_bad_recipe_one_line_error_and_dist_untouched(invoke, write_recipe, tmp_path, text, fragments):
    path = write_recipe(text, filename="bad.yaml")
    out = tmp_path / "dist"
    out.mkdir()
    (out / "keep.zip").write_bytes(b"existing")
    before = tree_snapshot(out)
    result = invoke("build", path, "--out", out)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert tree_snapshot(out) == before


def test_unknown_recipe_name_suggests(invoke):
    result = invoke("build", "pymsql")
    assert result.exit_code == 1
    assert "no recipe named 'pymsql'" in result.stderr and "did you mean 'pymysql'" in result.stderr


def test_missing_recipe_file(invoke, tmp_path):
    result = invoke("build", tmp_path / "nope.yaml")
    assert result.exit_code == 1 and "no such recipe file" in result.stderr


def test_bad_cli_arguments_are_one_line_usage_errors(invoke):
    result = invoke("build", "pymysql", "--python", "2.7")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown Python version '2.7'")
    result = invoke("build", "pymysql", "--arch", "sparc")
    assert result.exit_code == 1 and "unknown architecture 'sparc'" in result.stderr
    result = invoke("build", "pymysql", "--backend", "podman")
    assert result.exit_code == 2 and "Invalid value for '--backend'" in result.stderr


def test_real_process_prints_no_traceback(write_recipe, tmp_path):
    path = write_recipe("name: x\npackages: [pymysql]\npython: ['9.9']\n", filename="bad.yaml")
    proc = subprocess.run([sys.executable, "-m", "layerbuild", "build", str(path), "--out", str(tmp_path / "d")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "field 'python[0]'" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_defaults_and_normalisation():
    recipe = parse_recipe({"name": "x", "packages": ["PyMySQL>=1"], "python": "python3.13", "architectures": "aarch64"}, "x.yaml")
    assert recipe.python == ("3.13",)
    assert recipe.architectures == ("arm64",)
    assert recipe.bytecode == "alongside" and recipe.slim is True and recipe.backend == "auto"
    default = parse_recipe({"name": "y", "packages": ["six"]}, "y.yaml")
    assert default.python == ("3.12",) and default.architectures == ("x86_64",)
    assert [t.slug for t in recipe.targets(["3.11", "3.12"], ["x86_64"])] == ["python3.11-x86_64", "python3.12-x86_64"]


def test_shipped_recipes_all_valid():
    assert set(SHIPPED) <= set(list_recipe_names())
    for name in list_recipe_names():
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.license and recipe.description and recipe.imports


def test_list_command(invoke):
    result = invoke("list")
    assert result.exit_code == 0
    for name in SHIPPED:
        assert name in result.output


def test_recipe_error_type():
    with pytest.raises(RecipeError):
        parse_recipe({"name": "x"}, "x.yaml")
