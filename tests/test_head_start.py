"""Exactly pinned wheels are downloaded and unpacked while uv resolves (backends.wheels.HeadStart).

Against the loopback PEP 503 index (tests/faultproxy.py)."""

from __future__ import annotations

import hashlib
import zipfile


from layerbuild import wheelinstall
from layerbuild.backends import wheels
from layerbuild.recipe import parse_recipe
from test_wheelstore import download_for, index  # noqa: F401 - the loopback index fixture


def test_only_requirements_pinned_to_one_version_get_a_head_start():
    recipe = parse_recipe({"name": "p", "packages": ["A_b==1.0", "ranged>=1", "wild==2.*", "marked==1.0; python_version<'3'",
                                                     "arbitrary===1.0", "extras[x]==3", "two==1.0,!=1.1", "bare"]}, "p.yaml")  # fmt: skip
    assert wheels.exact_pins(recipe) == {"a-b": "1.0", "arbitrary": "1.0", "extras": "3"}


def test_a_head_start_hands_over_only_the_file_the_lock_allows(index, tmp_path):
    filename, data = index.add("demo-head", "1.0")
    download = download_for(index, filename, data, "demo-head")
    head = wheels.HeadStart(tmp_path / "work")
    head.begin(download)
    unpacked = head.take(filename, download.allowed)
    assert unpacked is not None and (unpacked.scratch / "demo_head" / "__init__.py").read_bytes() == b"VERSION = '1.0'\n"
    assert unpacked.wheel.read_bytes() == data and unpacked.wheel.is_relative_to(tmp_path / "work")  # a private copy
    assert head.take(filename, frozenset({"0" * 64})) is None  # the lock wants other bytes: installed the usual way
    assert head.take("demo_head-2.0-py3-none-any.whl", download.allowed) is None  # never started
    head.stop()


def test_once_stopped_a_head_start_writes_nothing_in_the_build(index, tmp_path):
    filename, data = index.add("demo-late", "1.0")
    head = wheels.HeadStart(tmp_path / "work")
    head.stop()  # the build ended (failed, or was interrupted) before the download came back
    head.begin(download_for(index, filename, data, "demo-late"))
    assert head.take(filename, frozenset({hashlib.sha256(data).hexdigest()})) is None
    assert not (tmp_path / "work").exists()


def test_a_pinned_build_installs_the_head_started_wheel_once(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-pin", "1.0", files={"demo_pin/__init__.py": b"PINNED = True\n"})
    index.add("demo-pin", "1.1")
    parents = []
    unpack = wheelinstall.unpack_wheels
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: parents.extend(parent.name for _ in w) or unpack(w, parent, **kw))
    path = write_recipe(f"name: pin\npackages: ['demo-pin==1.0']\npython: ['3.11']\nindex_url: {index.simple_url}\n", filename="pin.yaml")
    result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert parents == ["head-start"]  # unpacked while uv resolved, not again by the install
    with zipfile.ZipFile(tmp_path / "dist" / "pin-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_pin/__init__.py") == b"PINNED = True\n"
        assert "python/demo_pin-1.0.dist-info/INSTALLER" in archive.namelist()
