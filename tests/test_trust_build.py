"""Issue #16 "Trust nothing that comes back", the build side: locks and saved resolutions that must cover the
recipe, excludes that empty a package, a failed build touching others' files, oversized or duplicate-keyed
inputs, local file:// indexes, and build_env variables that would change which code or index is used.

Every index is a loopback PackageIndex (tests/faultproxy.py) or a local directory; every build is bounded
by uv's own timeouts (kept small here).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import reliability_figures
from faultproxy import PackageIndex, make_wheel

from layerbuild.errors import RecipeError
from layerbuild.limits import LOCK_MAX_BYTES, MANIFEST_MAX_BYTES, RECIPE_MAX_BYTES
from layerbuild.model.recipe import load_recipe

STEM = "myl-python3.12-x86_64"


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


@pytest.fixture
def net_env(tmp_path):
    # A private uv cache: wheels here share names and versions but not bytes across tests.
    return {"UV_HTTP_TIMEOUT": "2", "UV_HTTP_RETRIES": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache")}


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert all(ln.startswith("[") for ln in lines[:-1]), result.stderr  # progress lines only before it
    return lines[-1]


def zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


# --- finding 6: a failed build never touches a file it did not create ---------------------------------------


def test_failed_build_leaves_a_foreign_zip_without_manifest_byte_identical(index, invoke, write_recipe, tmp_path,
                                                                            net_env):  # fmt: skip
    """#16 finding 6: `echo x > out/myl-python3.12-x86_64.zip` then a build that cannot resolve: the file stays."""
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / f"{STEM}.zip"
    foreign.write_bytes(b"x\n")
    recipe = write_recipe(f"name: myl\npackages: [demo-nowhere]\nindex_url: {index.simple_url}\n", filename="myl.yaml")
    reliability_figures.count("bad_inputs", detail="foreign zip in --out, failing build")
    result = invoke("build", recipe, "--out", out, env=net_env)
    assert "demo-nowhere" in one_error_line(result)
    assert foreign.read_bytes() == b"x\n"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [f"{STEM}.zip"]


def test_successful_build_replaces_its_own_output_name(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 6 (success path, decided): a build that succeeds replaces the zip at its own output name."""
    index.add("demo-ok", "1.0")
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{STEM}.zip").write_bytes(b"x\n")
    (out / "unrelated.zip").write_bytes(b"mine\n")
    recipe = write_recipe(f"name: myl\npackages: [demo-ok]\nindex_url: {index.simple_url}\n", filename="myl.yaml")
    result = invoke("build", recipe, "--out", out, env=net_env)
    assert result.exit_code == 0, result.stderr
    assert "demo_ok/__init__.py" in " ".join(zip_names(out / f"{STEM}.zip"))
    assert (out / f"{STEM}.json").is_file()
    assert (out / "unrelated.zip").read_bytes() == b"mine\n"


# --- finding 14: size caps before parsing; a lock that is not UTF-8 -------------------------------------------


def test_oversized_recipe_is_refused_before_parsing(invoke, write_recipe, tmp_path):
    """#16 finding 14: a recipe over 1 MiB is refused with one line naming the file, its size and the cap."""
    text = "name: big\npackages: [six]\n" + "#" * RECIPE_MAX_BYTES + "\n"
    path = write_recipe(text, filename="big.yaml")
    size = path.stat().st_size
    reliability_figures.count("bad_inputs", detail="oversized recipe")
    line = one_error_line(invoke("build", path, "--out", tmp_path / "out"))
    assert str(path) in line and f"{size:,} bytes" in line and f"{RECIPE_MAX_BYTES:,}-byte cap" in line
    assert not (tmp_path / "out").exists()


def _locked_recipe(write_recipe, lock_bytes: bytes) -> tuple[Path, Path]:
    recipe = write_recipe("name: capped\npackages: [six]\n", filename="capped.yaml")
    lock = recipe.parent / "capped.lock" / "python3.12-x86_64.txt"
    lock.parent.mkdir()
    lock.write_bytes(lock_bytes)
    return recipe, lock


def test_oversized_lock_is_refused_before_parsing(invoke, write_recipe, tmp_path):
    """#16 finding 14: a lock over 4 MiB is refused with one line naming it, its size and the cap."""
    recipe, lock = _locked_recipe(write_recipe, b"# padding\n" * (LOCK_MAX_BYTES // 10 + 1))
    reliability_figures.count("bad_inputs", detail="oversized lock")
    line = one_error_line(invoke("build", recipe, "--out", tmp_path / "out"))
    assert str(lock) in line and f"{lock.stat().st_size:,} bytes" in line and f"{LOCK_MAX_BYTES:,}-byte cap" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_lock_that_is_not_utf8_is_one_line_naming_it(invoke, write_recipe, tmp_path):
    """#16 finding 14 (finding 18's lock part): a committed lock in Latin-1 is one line naming the file."""
    recipe, lock = _locked_recipe(write_recipe, b"# caf\xe9\nsix==1.16.0\n")
    reliability_figures.count("bad_inputs", detail="lock not UTF-8")
    line = one_error_line(invoke("build", recipe, "--out", tmp_path / "out"))
    assert str(lock) in line and "not UTF-8" in line
    from layerbuild.cli.klayers import committed_pins  # what `resolve` reads
    from layerbuild.errors import LockError

    recipe_obj = load_recipe(str(recipe))
    with pytest.raises(LockError, match="not UTF-8"):
        committed_pins(recipe_obj, recipe_obj.targets()[0])


def test_oversized_manifest_is_refused_before_parsing(invoke, tmp_path):
    """#16 finding 14: a manifest over 4 MiB beside a zip is refused naming it, its size and the cap."""
    layer = tmp_path / "big-python3.12-x86_64.zip"
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("python/big.py", "X = 1\n")
    manifest = layer.with_suffix(".json")
    manifest.write_text('{"name": "big", "notes": "' + "n" * MANIFEST_MAX_BYTES + '"}', encoding="utf-8")
    reliability_figures.count("bad_inputs", detail="oversized manifest")
    line = one_error_line(invoke("audit", layer))
    assert str(manifest) in line and f"{manifest.stat().st_size:,} bytes" in line
    assert f"{MANIFEST_MAX_BYTES:,}-byte cap" in line


# --- finding 22: duplicate keys in a recipe ------------------------------------------------------------------


@pytest.mark.parametrize("text, key, line_no", [
    ("name: one\npackages: [six]\nname: two\n", "name", 3),
    ("name: x\npackages: [six]\nbackend: docker\nbuild_env:\n  CFLAGS: -O2\n  CFLAGS: -O0\n", "CFLAGS", 6),
    ("name: x\npackages: [six]\nbuild_env: {CFLAGS: a, CFLAGS: b}\n", "CFLAGS", 3),
], ids=["top-level", "nested", "flow"])  # fmt: skip
def test_duplicate_keys_are_refused_naming_the_key_and_line(invoke, write_recipe, tmp_path, text, key, line_no):
    """#16 finding 22: a key given twice in any mapping of a recipe is refused, naming the key and its line."""
    path = write_recipe(text, filename="dup.yaml")
    reliability_figures.count("bad_inputs", detail="duplicate recipe keys")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert f"duplicate key '{key}'" in message and f"at line {line_no}," in message and str(path) in message
    line = one_error_line(invoke("build", path, "--out", tmp_path / "out"))
    assert f"duplicate key '{key}'" in line


def test_yaml_merge_keys_may_still_override(write_recipe):
    """#16 finding 22: a merge (`<<: *base`) is not a duplicate: its keys may be overridden, as YAML intends."""
    text = "name: x\npackages: [six]\nbackend: docker\nbuild_env:\n  <<: &base {CFLAGS: -O2}\n  CFLAGS: -O0\n"
    recipe = load_recipe(str(write_recipe(text, filename="merge.yaml")))
    assert dict(recipe.build_env) == {"CFLAGS": "-O0"}


# --- finding 23: build_env may not change which code or index is used ----------------------------------------


REFUSED_ENV = ["LD_PRELOAD", "LD_LIBRARY_PATH", "ld_preload", "PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
               "PYTHONUSERBASE", "PYTHONWARNINGS", "PIP_INDEX_URL", "pip_index_url", "PIP_EXTRA_INDEX_URL",
               "PIP_CONFIG_FILE", "UV_INDEX_URL", "UV_INDEX", "LAYERBUILD_INDEX_URL", "MY_INDEX_URL", "BASH_ENV",
               "GIT_SSH_COMMAND", "SSL_CERT_FILE", "aws_secret_access_key", "Aws_Access_Key_Id"]  # fmt: skip


@pytest.mark.parametrize("name", REFUSED_ENV)
def test_build_env_that_changes_code_or_index_is_refused(write_recipe, name):
    """#16 finding 23: build_env may not set loader, interpreter, installer, index or credential variables."""
    path = write_recipe(f"name: x\npackages: [six]\nbackend: docker\nbuild_env:\n  {name}: /tmp/evil\n",
                        filename="env.yaml")  # fmt: skip
    reliability_figures.count("bad_inputs", detail="build_env smuggling")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert f"field 'build_env.{name}': may not be set by a recipe: " in message and str(path) in message
    assert "\n" not in message


def test_build_env_allows_compiler_and_build_knobs(write_recipe):
    """#16 finding 23: what stays allowed: compiler flags and packages' own build switches."""
    allowed = {"CFLAGS": "-O2", "CXXFLAGS": "-O2", "LDFLAGS": "-s", "MAKEFLAGS": "-j2", "CC": "gcc",
               "SOURCE_DATE_EPOCH": "0", "NPY_NUM_BUILD_JOBS": "2", "PIP_NO_BINARY": "markupsafe",
               "HTTPS_PROXY": "http://proxy:3128", "PYTHONHASHSEED": "0"}  # fmt: skip
    text = "name: x\npackages: [six]\nbackend: docker\nbuild_env:\n" + "".join(f"  {k}: '{v}'\n" for k, v in allowed.items())
    assert dict(load_recipe(str(write_recipe(text, filename="ok.yaml"))).build_env) == allowed


def test_docker_container_env_applies_the_same_rule(monkeypatch):
    """#16 finding 23: a Recipe made in code (no validation) still cannot smuggle them into the container."""
    from layerbuild.backends.docker.backend import container_env
    from layerbuild.backends.indexes import IndexSettings

    index = IndexSettings("https://mirror.example/simple")
    env = container_env(index, (("CFLAGS", "-O1"), ("LD_PRELOAD", "/evil.so"), ("pip_index_url", "http://evil/"),
                                ("PIP_INDEX_URL", "http://evil/"), ("aws_secret_access_key", "s")), ca_mounted=False)  # fmt: skip
    assert env["CFLAGS"] == "-O1" and env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert not {"LD_PRELOAD", "pip_index_url", "aws_secret_access_key"} & set(env)


def test_uv_never_receives_lower_case_aws_variables(monkeypatch):
    """#16 finding 23: credentials in lower case are removed from uv's environment as upper case ones are."""
    from layerbuild.backends.wheels.uv import uv_env

    monkeypatch.setenv("aws_secret_access_key", "lower-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upper-secret")
    env = uv_env()
    assert not [k for k in env if k.upper().startswith("AWS_")]
    assert "lower-secret" not in env.values()


# --- finding 2: a lock or saved resolution must satisfy the recipe -------------------------------------------


def _lock(invoke, recipe: Path, env: dict) -> Path:
    result = invoke("lock", recipe, env=env)
    assert result.exit_code == 0, result.stderr
    return recipe.parent / f"{recipe.stem}.lock" / "python3.12-x86_64.txt"


def _header(lock: Path) -> str:
    return "".join(ln for ln in lock.read_text(encoding="utf-8").splitlines(keepends=True) if ln.startswith("#"))


def test_truncated_lock_is_refused_not_built_empty(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 2: a lock cut after its header (a 22-byte layer before) is refused naming the lock and package."""
    index.add("demo-a", "1.0")
    recipe = write_recipe(f"name: trunc\npackages: [demo-a]\nindex_url: {index.simple_url}\n", filename="trunc.yaml")
    lock = _lock(invoke, recipe, net_env)
    lock.write_text(_header(lock), encoding="utf-8")  # the header (and its digest) intact, every pin gone
    reliability_figures.count("bad_inputs", detail="truncated lock")
    out = tmp_path / "out"
    line = one_error_line(invoke("build", recipe, "--out", out, env=net_env))
    assert str(lock) in line and "does not satisfy the recipe" in line and "demo-a" in line
    assert "layerbuild lock trunc" in line
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_lock_pinning_another_package_is_refused(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 2: a lock whose pins are another package's (with valid hashes) does not build that package."""
    index.add("demo-a", "1.0")
    index.add("demo-other", "3.0")
    other = write_recipe(f"name: other\npackages: [demo-other]\nindex_url: {index.simple_url}\n", filename="other.yaml")
    other_lock = _lock(invoke, other, net_env)
    recipe = write_recipe(f"name: swap\npackages: [demo-a]\nindex_url: {index.simple_url}\n", filename="swap.yaml")
    lock = _lock(invoke, recipe, net_env)
    body = "".join(ln for ln in other_lock.read_text().splitlines(keepends=True) if not ln.startswith("#"))
    lock.write_text(_header(lock) + body, encoding="utf-8")
    reliability_figures.count("bad_inputs", detail="lock pinning another package")
    line = one_error_line(invoke("build", recipe, "--out", tmp_path / "out", env=net_env))
    assert str(lock) in line and "pins no version of demo-a" in line


def test_lock_pinning_a_version_the_recipe_excludes_is_refused():
    """#16 finding 2 (pure): the pinned version must be one the recipe's specifier allows, with a hash."""
    from packaging.requirements import Requirement

    from layerbuild.model.lockfile import parse_lock, unsatisfied
    from layerbuild.model.runtimes import Target, get_runtime

    target = Target(get_runtime("3.12"), "x86_64")
    digest = "a" * 64
    lock = parse_lock(f"# layerbuild: target={target.slug}\ndemo-a==1.0 \\\n    --hash=sha256:{digest}\nnohash==2.0\n")
    assert "demo-a==1.0, which the recipe's 'demo-a>=2' does not allow" in unsatisfied(lock, [Requirement("demo-a>=2")], target)
    assert unsatisfied(lock, [Requirement("demo-a<2")], target) is None
    assert "without a --hash" in unsatisfied(lock, [Requirement("nohash")], target)
    assert unsatisfied(lock, [Requirement("absent; python_version < '3'")], target) is None  # not for this target
    assert "written for python3.12-x86_64" in unsatisfied(lock, [], Target(get_runtime("3.12"), "arm64"))
    extras = parse_lock(f"demo-a[x]==1.0 --hash=sha256:{digest}\n")
    assert "without the extras y" in unsatisfied(extras, [Requirement("demo-a[x,y]")], target)


@pytest.mark.parametrize("damage", ["truncated", "other-package", "garbage"])
def test_damaged_saved_resolution_is_discarded_and_never_empties_dist(index, invoke, write_recipe, tmp_path, net_env,
                                                                       damage):  # fmt: skip
    """#16 finding 2: a damaged resolution under the cache's resolutions/ is discarded (one line) and resolved
    again; the good dist/ zip is not overwritten with an empty layer."""
    index.add("demo-a", "1.0")
    env = dict(net_env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    recipe = write_recipe(f"name: saved\npackages: [demo-a]\nindex_url: {index.simple_url}\n", filename="saved.yaml")
    out = tmp_path / "out"
    first = invoke("build", recipe, "--out", out, env=env)
    assert first.exit_code == 0, first.stderr
    good = (out / "saved-python3.12-x86_64.zip").read_bytes()
    (saved,) = (tmp_path / "xdg").rglob("resolutions/*.json")
    data = json.loads(saved.read_text())
    header = "".join(ln + "\n" for ln in data["lock"].splitlines() if ln.startswith("#"))
    if damage == "truncated":
        saved.write_text(json.dumps({"created": data["created"], "lock": header}))
    elif damage == "other-package":
        _, wheel = make_wheel("demo-z", "9.0")
        pin = f"demo-z==9.0 \\\n    --hash=sha256:{hashlib.sha256(wheel).hexdigest()}\n"
        saved.write_text(json.dumps({"created": data["created"], "lock": header + pin}))
    else:
        saved.write_bytes(b'{"created": 1e99, "lock": \x00\xff')
    reliability_figures.count("faults", detail="damaged saved resolution")
    again = invoke("build", recipe, "--out", out, env=env)
    assert again.exit_code == 0, again.stderr
    assert f"saved resolution {saved} is damaged" in again.stderr and "discarded, resolving again" in again.stderr
    assert (out / "saved-python3.12-x86_64.zip").read_bytes() == good
    assert "python/demo_a/__init__.py" in zip_names(out / "saved-python3.12-x86_64.zip")
    assert "demo-a" in json.loads(saved.read_text())["lock"]  # resolved again and remembered soundly


# --- finding 3: an exclude that removes every file of a requested package ------------------------------------


@pytest.mark.parametrize("patterns, package, index_no", [
    (["*"], "demo-a", 0),
    (["python"], "demo-a", 0),
    (["python/**/tests", "python/demo_b"], "demo-b", 1),
], ids=["star", "python", "one-package"])  # fmt: skip
def test_exclude_that_empties_a_requested_package_fails_naming_it(index, invoke, write_recipe, tmp_path, net_env,
                                                                  patterns, package, index_no):  # fmt: skip
    """#16 finding 3: `exclude: ["*"]` gave an empty layer whose manifest listed the packages, exit 0."""
    index.add("demo-a", "1.0")
    index.add("demo-b", "1.0")
    recipe = write_recipe(name="excl", packages=["demo-a", "demo-b"], index_url=index.simple_url, exclude=patterns)
    reliability_figures.count("bad_inputs", detail="exclude emptying a package")
    out = tmp_path / "out"
    line = one_error_line(invoke("build", recipe, "--out", out, env=net_env))
    assert f"field 'exclude[{index_no}]': {patterns[index_no]!r} removes every file of {package}" in line
    assert str(recipe.resolve()) in line
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_exclude_that_trims_a_package_still_builds(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 3 (control): a pattern removing some of a package's files is fine."""
    index.add("demo-a", "1.0", files={"demo_a/__init__.py": b"X = 1\n", "demo_a/tests/test_x.py": b"pass\n"})
    recipe = write_recipe(name="trim", packages=["demo-a"], index_url=index.simple_url, exclude=["tests"])
    out = tmp_path / "out"
    result = invoke("build", recipe, "--out", out, env=net_env)
    assert result.exit_code == 0, result.stderr
    names = zip_names(out / "trim-python3.12-x86_64.zip")
    assert "python/demo_a/__init__.py" in names and not [n for n in names if "/tests/" in n]


# --- finding 20: local file:// indexes and find-links directories ----------------------------------------------


def _local_index(folder: Path, layout: str) -> str:
    """demo-a 1.0 (asking demo-b with extra x) and demo-b 2.0 as a PEP 503 tree or a flat find-links folder."""
    folder.mkdir()
    for name, version, requires in (("demo-a", "1.0", ("demo-b; extra == 'x'",)), ("demo-b", "2.0", ())):
        filename, data = make_wheel(name, version, requires=requires)
        if layout == "flat":
            (folder / filename).write_bytes(data)
            continue
        (folder / name).mkdir()
        (folder / name / filename).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        (folder / name / "index.html").write_text(f'<a href="{filename}#sha256={digest}">{filename}</a>\n')
    return folder.as_uri()


@pytest.mark.parametrize("layout", ["tree", "flat"])
def test_local_file_index_builds_and_locks_end_to_end(invoke, write_recipe, tmp_path, net_env, layout):
    """#16 finding 20: `index_url: file:///...` resolved with uv, then failed with InvalidSchema in our own
    downloader; a PEP 503 tree and a directory of wheels now build, lock, and build from the lock."""
    url = _local_index(tmp_path / "wheels", layout)
    recipe = write_recipe(name="local", packages=["demo-a[x]"], index_url=url)
    env = dict(net_env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    out = tmp_path / "out"
    result = invoke("build", recipe, "--out", out, env=env)
    assert result.exit_code == 0, result.stderr
    names = zip_names(out / "local-python3.12-x86_64.zip")
    assert "python/demo_a/__init__.py" in names and "python/demo_b/__init__.py" in names
    lock = _lock(invoke, recipe, env)
    assert "demo-b==2.0" in lock.read_text()
    fresh = dict(env, XDG_CACHE_HOME=str(tmp_path / "xdg2"), UV_CACHE_DIR=str(tmp_path / "uv2"))
    again = invoke("build", recipe, "--out", tmp_path / "out2", "--no-cache", env=fresh)
    assert again.exit_code == 0, again.stderr
    assert list((tmp_path / "xdg2").rglob("wheels/*/*/demo_b-2.0-py3-none-any.whl"))  # our store read the file


def test_local_index_wheel_changed_after_locking_fails_naming_the_package(invoke, write_recipe, tmp_path, net_env):
    """#16 finding 20: a local wheel replaced after locking is caught by the lock's hashes, as on a server."""
    url = _local_index(tmp_path / "wheels", "flat")
    recipe = write_recipe(name="localtamper", packages=["demo-b"], index_url=url)
    _lock(invoke, recipe, net_env)
    filename, evil = make_wheel("demo-b", "2.0", files={"demo_b/__init__.py": b"import os  # tampered\n"})
    (tmp_path / "wheels" / filename).write_bytes(evil)
    reliability_figures.count("faults", detail="tampered wheel in a local index")
    env = dict(net_env, UV_CACHE_DIR=str(tmp_path / "uv-other"), XDG_CACHE_HOME=str(tmp_path / "xdg-other"))
    line = one_error_line(invoke("build", recipe, "--out", tmp_path / "out", "--no-cache", env=env))
    assert "hash mismatch for demo-b" in line and url in line


def test_find_links_directory_is_given_to_uv_as_find_links(tmp_path):
    """#16 finding 20 (pure args): a flat directory is --find-links; a tree stays an index."""
    from layerbuild.backends.indexes import IndexSettings

    flat, tree = _local_index(tmp_path / "flat", "flat"), _local_index(tmp_path / "tree", "tree")
    assert IndexSettings(flat).args() == ["--no-index", "--find-links", flat]
    assert IndexSettings(flat, ("https://pypi.org/simple",)).args() == ["--index-url", "https://pypi.org/simple",
                                                                        "--find-links", flat]  # fmt: skip
    assert IndexSettings(tree, (flat,)).args() == ["--index-url", tree, "--find-links", flat]


@pytest.mark.parametrize("url", ["file://server/share/wheels", "file:relative/dir"])
def test_file_index_with_a_host_or_relative_path_is_refused(write_recipe, url):
    """#16 finding 20: a file:// index must be an absolute local directory; the message says what is valid."""
    path = write_recipe(f"name: x\npackages: [six]\nindex_url: '{url}'\n", filename="bad.yaml")
    reliability_figures.count("bad_inputs", detail="file index URL")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    assert "field 'index_url'" in str(info.value) and "http(s)://" in str(info.value) and "file:///" in str(info.value)


def test_docker_backend_refuses_a_local_index_in_one_line(tmp_path, write_recipe):
    """#16 finding 20: the build container cannot see the host's folder: said before any engine is asked."""
    from layerbuild.backends.base import BuildRequest
    from layerbuild.backends.docker import backend as docker
    from layerbuild.backends.indexes import IndexSettings
    from layerbuild.errors import BuildError

    url = _local_index(tmp_path / "wheels", "tree")
    recipe = load_recipe(str(write_recipe(name="dock", packages=["demo-a"], index_url=url, backend="docker")))
    request = BuildRequest(recipe=recipe, target=recipe.targets()[0], work_dir=tmp_path / "w",
                           index=IndexSettings.for_recipe(recipe))  # fmt: skip
    with pytest.raises(BuildError, match="local file:// index is read by the wheels backend only"):
        docker.prepare(request)


def test_local_index_that_is_not_a_directory_is_named(invoke, write_recipe, tmp_path, net_env):
    """#16 finding 20: a file:// index naming no directory says so (uv only says the package was not found)."""
    url = (tmp_path / "nowhere").as_uri()
    recipe = write_recipe(name="nowhere", packages=["demo-a"], index_url=url)
    reliability_figures.count("bad_inputs", detail="file index URL")
    line = one_error_line(invoke("build", recipe, "--out", tmp_path / "out", env=net_env))
    assert f"index {url}: {tmp_path / 'nowhere'} is not a directory" in line
