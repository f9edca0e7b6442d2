"""Build cache, parallel targets and `build --all`: real builds of small packages from the index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from layerbuild.cache import builds as cache

pytestmark = pytest.mark.network


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own build cache (uv's download cache stays shared)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "layerbuild" / "builds"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.endswith(".tmp"))


# --- the key (pure) ---------------------------------------------------------------------------

BASE = dict(recipe={"name": "x", "packages": ["six"]}, target="python3.11-x86_64", backend="wheels", image=None,
            lock_text="six==1.17.0 --hash=sha256:aa\n", toolchain={"bytecode": "cpython-311", "strip": "/usr/bin/strip"})  # fmt: skip


def test_key_is_stable_and_changes_with_every_input():
    key = cache.cache_key(**BASE)
    assert key == cache.cache_key(**BASE) and len(key) == 64
    changes = [
        {"recipe": {"name": "x", "packages": ["six"], "slim": False}},
        {"target": "python3.12-x86_64"},
        {"backend": "docker"},
        {"image": "my/image"},
        {"lock_text": "six==1.16.0 --hash=sha256:bb\n"},
        {"toolchain": {"bytecode": "none", "strip": "/usr/bin/strip"}},
        {"tool": "another-checkout"},
    ]
    keys = {cache.cache_key(**{**BASE, **change}) for change in changes}
    assert len(keys) == len(changes) and key not in keys


def test_tool_digest_covers_layerbuilds_code(tmp_path, monkeypatch):
    """A changed checkout (same version number) must not serve layers its previous code made."""
    import shutil

    import layerbuild

    copy = tmp_path / "layerbuild"
    shutil.copytree(Path(layerbuild.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "__file__", str(copy / "cache" / "builds.py"))
    cache.tool_digest.cache_clear()
    try:
        before = cache.tool_digest()
        assert before == cache.tool_digest.__wrapped__()
        (copy / "build" / "slim.py").write_text((copy / "build" / "slim.py").read_text() + "\n# a changed rule\n")
        assert cache.tool_digest.__wrapped__() != before
        (copy / "audit" / "data" / "al2-libs.txt").write_text("libc.so.6\n")
        changed = cache.tool_digest.__wrapped__()
        (copy / "audit" / "data" / "al2-libs.txt").write_text("libc.so.6\nlibm.so.6\n")
        assert cache.tool_digest.__wrapped__() != changed
    finally:
        cache.tool_digest.cache_clear()


# --- hits, misses, corruption -----------------------------------------------------------------


def test_unchanged_target_is_cached_and_identical(invoke, write_recipe, tmp_path, private_cache):
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    out = tmp_path / "dist"
    first = invoke("build", path, "--out", out)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("built: ")
    zip_path = out / "pm-python3.11-x86_64.zip"
    built_sha = sha256(zip_path)
    assert len(entries(private_cache)) == 1

    second = invoke("build", path, "--out", out)
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("cached: ")
    assert "[python3.11-x86_64] cached" in second.stderr
    assert "building with" not in second.stderr
    assert sha256(zip_path) == built_sha
    manifest = json.loads((out / "pm-python3.11-x86_64.json").read_text())
    assert manifest["sha256"] == built_sha

    # A fresh output directory is served from the cache too, with the same bytes.
    third = invoke("build", path, "--out", tmp_path / "other", "--json")
    assert json.loads(third.stdout)[0]["status"] == "cached"
    assert sha256(tmp_path / "other" / "pm-python3.11-x86_64.zip") == built_sha


def test_changed_recipe_is_a_miss(invoke, write_recipe, tmp_path, private_cache):
    out = tmp_path / "dist"
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    assert invoke("build", path, "--out", out).stdout.startswith("built: ")
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"], bytecode="none")
    result = invoke("build", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("built: ")
    assert len(entries(private_cache)) == 2


def test_corrupted_entry_is_detected_and_rebuilt(invoke, write_recipe, tmp_path, private_cache):
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    out = tmp_path / "dist"
    assert invoke("build", path, "--out", out).exit_code == 0
    good = sha256(out / "pm-python3.11-x86_64.zip")
    [entry] = entries(private_cache)
    stored = entry / "layer.zip"
    stored.write_bytes(stored.read_bytes()[:-10] + b"corrupted!")

    result = invoke("build", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert "cache entry corrupted" in result.stderr
    assert result.stdout.startswith("built: ")
    assert sha256(out / "pm-python3.11-x86_64.zip") == good  # the rebuild, not the corrupted copy
    [entry] = entries(private_cache)
    assert sha256(entry / "layer.zip") == good  # and the cache holds a good entry again
    assert invoke("build", path, "--out", out).stdout.startswith("cached: ")


def test_missing_entry_record_counts_as_corrupted(tmp_path):
    root = tmp_path / "builds"
    key = "ab" * 32
    directory = cache.entry_dir(key, root)
    directory.mkdir(parents=True)
    (directory / "layer.zip").write_bytes(b"zip")
    (directory / "manifest.json").write_text("{}")
    assert cache.lookup(key, root) == (None, "corrupted")
    assert not directory.exists()
    assert cache.lookup(key, root) == (None, "miss")


def test_no_cache_forces_a_rebuild(invoke, write_recipe, tmp_path):
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    out = tmp_path / "dist"
    assert invoke("build", path, "--out", out).exit_code == 0
    result = invoke("build", path, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("built: ")
    assert "building with wheels" in result.stderr


# --- parallel targets and --all ---------------------------------------------------------------


def test_matrix_builds_every_target(invoke, write_recipe, tmp_path):
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11", "3.12"], architectures=["x86_64", "arm64"])
    out = tmp_path / "dist"
    result = invoke("build", path, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    slugs = sorted(o["target"] for o in json.loads(result.stdout))
    assert slugs == ["python3.11-arm64", "python3.11-x86_64", "python3.12-arm64", "python3.12-x86_64"]
    for slug in slugs:
        assert (out / f"pm-{slug}.zip").is_file() and (out / f"pm-{slug}.json").is_file()
        assert f"[{slug}] built" in result.stderr


@pytest.fixture
def recipes_dir(tmp_path, monkeypatch):
    import layerbuild.model.recipe

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(layerbuild.model.recipe, "RECIPES_DIR", folder)
    return folder


def test_all_builds_every_recipe(invoke, recipes_dir, tmp_path):
    (recipes_dir / "pm.yaml").write_text("name: pm\npackages: [pymysql]\npython: ['3.11']\n")
    (recipes_dir / "sx.yaml").write_text("name: sx\npackages: [six]\npython: ['3.11', '3.12']\n")
    out = tmp_path / "dist"
    result = invoke("build", "--all", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.zip")) == [
        "pm-python3.11-x86_64.zip", "sx-python3.11-x86_64.zip", "sx-python3.12-x86_64.zip"]  # fmt: skip
    assert result.stdout.count("built: ") == 3


def test_one_failing_target_does_not_hide_the_others(invoke, recipes_dir, tmp_path):
    (recipes_dir / "good.yaml").write_text("name: good\npackages: [six]\npython: ['3.11']\n")
    (recipes_dir / "bad1.yaml").write_text("name: bad1\npackages: ['six==0.0.1']\npython: ['3.11']\n")
    (recipes_dir / "bad2.yaml").write_text("name: bad2\npackages: ['pymysql==0.0.1']\npython: ['3.11']\n")
    out = tmp_path / "dist"
    result = invoke("build", "--all", "--out", out)
    assert result.exit_code == 1
    assert (out / "good-python3.11-x86_64.zip").is_file()
    assert "built: " in result.stdout and "good-python3.11-x86_64.zip" in result.stdout
    assert "error: 2 of 3 targets failed: " in result.stderr
    assert "[bad1-python3.11-x86_64] cannot resolve" in result.stderr
    assert "[bad2-python3.11-x86_64] cannot resolve" in result.stderr
    assert "Traceback" not in result.output
    assert not list(out.glob("bad*"))


@pytest.mark.parametrize("args, message", [
    ((), "give either a RECIPE or --all"),
    (("pymysql", "--all"), "give a RECIPE or --all, not both"),
])  # fmt: skip
def test_recipe_and_all_are_exclusive(invoke, args, message):
    result = invoke("build", *args)
    assert result.exit_code == 2
    assert message in result.stderr


# --- remembered resolutions -------------------------------------------------------------------


def test_a_fresh_resolution_is_remembered_within_its_ttl(invoke, write_recipe, tmp_path, private_cache):
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    out = tmp_path / "dist"
    assert invoke("build", path, "--out", out).exit_code == 0
    [memo] = list((private_cache.parent / "resolutions").glob("*.json"))
    data = json.loads(memo.read_text())
    assert "pymysql==" in data["lock"]

    # Within the TTL the remembered pins are used as they are: prove it with pins that cannot install.
    broken = {"created": data["created"], "lock": data["lock"].replace("pymysql==", "pymysql==0.0.0+nope", 1)}
    memo.write_text(json.dumps(broken))
    result = invoke("build", path, "--out", out)
    assert result.exit_code == 1 and "error: " in result.stderr

    # Past the TTL it is resolved afresh (and remembered again).
    memo.write_text(json.dumps({**broken, "created": data["created"] - 3600}))
    result = invoke("build", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("cached: ")
    assert json.loads(memo.read_text())["lock"] == data["lock"]


def test_resolution_ttl_zero_remembers_nothing(invoke, write_recipe, tmp_path, private_cache, monkeypatch):
    monkeypatch.setenv("LAYERBUILD_RESOLUTION_TTL", "0")
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    assert invoke("build", path, "--out", tmp_path / "dist").exit_code == 0
    assert not list((private_cache.parent / "resolutions").glob("*.json"))
    assert invoke("build", path, "--out", tmp_path / "dist").stdout.startswith("cached: ")


@pytest.mark.parametrize("value", ["ten minutes", "-5", "nan"])
def test_bad_resolution_ttl_is_a_one_line_error(invoke, write_recipe, tmp_path, monkeypatch, value):
    monkeypatch.setenv("LAYERBUILD_RESOLUTION_TTL", value)
    path = write_recipe(name="pm", packages=["pymysql"], python=["3.11"])
    result = invoke("build", path, "--out", tmp_path / "dist")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: LAYERBUILD_RESOLUTION_TTL: {value!r} is not a number of seconds "
                                     "(e.g. 600, or 0 to turn it off)")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").glob("*.zip"))
