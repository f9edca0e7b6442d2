"""Locked wheels downloaded and unpacked each as soon as it arrives (backends.wheels.WheelPipeline).

Against the loopback PEP 503 index (tests/faultproxy.py)."""

from __future__ import annotations

import zipfile

import pytest
from test_wheelstore import download_for, index  # noqa: F401 - the loopback index fixture

from layerbuild.backends.wheels import backend as wheels
from layerbuild.backends.wheels import install as wheelinstall
from layerbuild.errors import ResolveError


def test_a_cancelled_download_leaves_nothing_in_the_store(index, tmp_path):
    from layerbuild.backends.wheels import store as wheelstore

    filename, data = index.add("demo-cancel", "1.0")
    download = download_for(index, filename, data, "demo-cancel")
    with pytest.raises(wheelstore.Cancelled):
        wheelstore.fetch(download, tmp_path / "store", cancelled=lambda: True)
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert wheelstore.fetch(download, tmp_path / "store").read_bytes() == data  # and a later fetch is not hindered


def test_a_locked_wheel_is_waited_for_however_long_it_takes(index, tmp_path, monkeypatch):
    """A slow download that keeps making progress (a big wheel on a slow link) is not abandoned and begun
    again: only a read that times out ends it."""
    from faultproxy import SLOW, FaultPlan

    monkeypatch.setenv("UV_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    filename, data = index.add("demo-big", "1.0", files={"demo_big/__init__.py": bytes(range(256)) * 4000})
    index.fault(FaultPlan(SLOW, count=1, match=filename, stall_seconds=8))  # 8 s in all, a piece every 0.4 s
    download = download_for(index, filename, data, "demo-big")
    pipeline = wheels.WheelPipeline(tmp_path / "work")
    pipeline.begin(download)
    unpacked = pipeline.take(filename)
    pipeline.stop()
    assert unpacked is not None and (unpacked.scratch / "demo_big" / "__init__.py").read_bytes() == bytes(range(256)) * 4000
    assert sum(r == f"GET /files/{filename}" for r in index.requests) == 1


def test_the_pipeline_hands_over_a_private_copy_of_what_it_began(index, tmp_path):
    filename, data = index.add("demo-head", "1.0")
    download = download_for(index, filename, data, "demo-head")
    pipeline = wheels.WheelPipeline(tmp_path / "work")
    pipeline.begin(download)
    unpacked = pipeline.take(filename)
    assert unpacked is not None and (unpacked.scratch / "demo_head" / "__init__.py").read_bytes() == b"VERSION = '1.0'\n"
    assert unpacked.wheel.read_bytes() == data and unpacked.wheel.is_relative_to(tmp_path / "work")  # a private copy
    assert pipeline.take("demo_head-2.0-py3-none-any.whl") is None  # never begun: installed the usual way
    pipeline.stop()


def test_once_stopped_the_pipeline_writes_nothing_in_the_build(index, tmp_path):
    filename, data = index.add("demo-late", "1.0")
    pipeline = wheels.WheelPipeline(tmp_path / "work")
    pipeline.stop()  # the build ended (failed, or was interrupted) before the download came back
    pipeline.begin(download_for(index, filename, data, "demo-late"))
    assert pipeline.take(filename) is None
    assert not (tmp_path / "work").exists()


def test_a_pinned_build_unpacks_each_wheel_once(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-pin", "1.0", files={"demo_pin/__init__.py": b"PINNED = True\n"})
    index.add("demo-pin", "1.1")
    parents = []
    unpack = wheelinstall.unpack_wheels
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: parents.extend(parent.name for _ in w) or unpack(w, parent, **kw))
    path = write_recipe(f"name: pin\npackages: ['demo-pin==1.0']\npython: ['3.11']\nindex_url: {index.simple_url}\n", filename="pin.yaml")
    result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert parents == ["pipeline"]  # unpacked as it arrived, not again by the install
    with zipfile.ZipFile(tmp_path / "dist" / "pin-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_pin/__init__.py") == b"PINNED = True\n"
        assert "python/demo_pin-1.0.dist-info/INSTALLER" in archive.namelist()


def test_a_failure_of_a_locked_wheel_is_the_builds(index, tmp_path):
    filename, data = index.add("demo-bad", "1.0")
    index.served[filename] = b"not the listed bytes"
    download = download_for(index, filename, data, "demo-bad")
    pipeline = wheels.WheelPipeline(tmp_path / "locked")
    pipeline.begin(download)
    with pytest.raises(ResolveError, match="^hash mismatch for demo-bad"):
        pipeline.take(filename)
    pipeline.stop()


def test_with_a_committed_lock_each_wheel_is_unpacked_as_it_arrives(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-one", "1.0", files={"demo_one/__init__.py": b"ONE = 1\n"})
    index.add("demo-two", "2.0", files={"demo_two/__init__.py": b"TWO = 2\n"})
    path = write_recipe(f"name: two\npackages: ['demo-one>=1', 'demo-two']\npython: ['3.11']\nindex_url: {index.simple_url}\n",
                        filename="two.yaml")  # fmt: skip
    env = {"UV_CACHE_DIR": str(tmp_path / "uv")}
    assert invoke("lock", path, env=env).exit_code == 0
    calls = []
    unpack = wheelinstall.unpack_wheels
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: calls.extend((parent.name, p.name) for p in w) or unpack(w, parent, **kw))
    result = invoke("build", path, "--out", tmp_path / "dist", env=env)
    assert result.exit_code == 0, result.stderr
    assert sorted(calls) == [("pipeline", "demo_one-1.0-py3-none-any.whl"), ("pipeline", "demo_two-2.0-py3-none-any.whl")]
    with zipfile.ZipFile(tmp_path / "dist" / "two-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_one/__init__.py") == b"ONE = 1\n" and archive.read("python/demo_two/__init__.py") == b"TWO = 2\n"


def test_a_wheel_asked_for_twice_is_fetched_and_unpacked_once(index, tmp_path, monkeypatch):
    filename, data = index.add("demo-twice", "1.0")
    download = download_for(index, filename, data, "demo-twice")
    calls = []
    unpack = wheelinstall.unpack_wheels
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: calls.append(w) or unpack(w, parent, **kw))
    pipeline = wheels.WheelPipeline(tmp_path / "work")
    pipeline.begin(download)
    pipeline.begin(download)  # asked again (a pin listed twice): one download, one unpack
    assert pipeline.take(filename) is not None
    pipeline.stop()
    assert len(calls) == 1
    assert sum("/files/" in r for r in index.requests) == 1
