"""Wheels downloaded and unpacked each as soon as it arrives (backends.wheels.WheelPipeline): exactly pinned ones
while uv resolves (a head start), every locked one once the lock is known.

Against the loopback PEP 503 index (tests/faultproxy.py)."""

from __future__ import annotations

import hashlib
import threading
import zipfile

import pytest
from test_wheelstore import download_for, index  # noqa: F401 - the loopback index fixture

from layerbuild.backends.wheels import backend as wheels
from layerbuild.backends.wheels import install as wheelinstall
from layerbuild.errors import ResolveError
from layerbuild.model.recipe import parse_recipe


def test_only_requirements_pinned_to_one_version_get_a_head_start():
    recipe = parse_recipe({"name": "p", "packages": ["A_b==1.0", "ranged>=1", "wild==2.*", "marked==1.0; python_version<'3'",
                                                     "arbitrary===1.0", "extras[x]==3", "two==1.0,!=1.1", "bare"]}, "p.yaml")  # fmt: skip
    assert wheels.exact_pins(recipe) == {"a-b": "1.0", "arbitrary": "1.0", "extras": "3"}


def test_other_requirements_get_a_guessed_head_start_unless_a_marker_makes_it_unsure():
    recipe = parse_recipe({"name": "p", "packages": ["pinned==1.0", "Ranged>=1,<3", "bare", "marked>=1; python_version<'3'"]},
                          "p.yaml")  # fmt: skip
    assert {name: str(r.specifier) for name, r in wheels.likely_candidates(recipe).items()} == {"ranged": "<3,>=1", "bare": ""}


def test_a_wheels_requirements_are_read_for_the_target_and_the_extras_asked_for():
    from layerbuild.model.runtimes import make_target

    metadata = ("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: plain>=1\n"
                "Requires-Dist: socksy; extra == 'socks'\nRequires-Dist: winonly; sys_platform == 'win32'\n"
                "Requires-Dist: armonly; platform_machine == 'aarch64'\nRequires-Dist: old; python_version < '3.10'\n"
                "Requires-Dist: not a requirement ((\nRequires-Dist: direct @ https://example.com/d.whl\n"
                "Requires-Dist: odd; python_version ~= 'abc'\n\nBody: ignored\n")  # fmt: skip

    def names(extras, arch):
        return [r.name for r in wheels.dependencies_on(metadata, frozenset(extras), make_target("3.11", arch))]

    assert names((), "x86_64") == ["plain"]
    assert names(("socks",), "arm64") == ["plain", "socksy", "armonly"]


def test_an_unpinned_build_installs_the_likely_release_fetched_while_uv_resolved(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-guess", "1.0")
    index.add("demo-guess", "1.1", files={"demo_guess/__init__.py": b"NEWEST = True\n"})
    calls, begun = [], []
    unpack, begin = wheelinstall.unpack_wheels, wheels.WheelPipeline.begin
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: calls.extend((parent.name, p.name) for p in w) or unpack(w, parent, **kw))
    monkeypatch.setattr(wheels.WheelPipeline, "begin", lambda self, d, speculative, **kw: begun.append((d.file.filename, speculative)) or begin(self, d, speculative, **kw))
    path = write_recipe(f"name: guess\npackages: ['demo-guess>=1']\npython: ['3.11']\nindex_url: {index.simple_url}\n", filename="guess.yaml")
    result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert begun[0] == ("demo_guess-1.1-py3-none-any.whl", True)  # begun from the index page while uv resolved
    assert calls == [("pipeline", "demo_guess-1.1-py3-none-any.whl")]  # and taken by the install, not unpacked again
    with zipfile.ZipFile(tmp_path / "dist" / "guess-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_guess/__init__.py") == b"NEWEST = True\n"


def test_a_wrong_guess_is_ignored_and_the_locked_release_installed(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-held", "1.0", files={"demo_held/__init__.py": b"HELD_BACK = True\n"})
    index.add("demo-held", "2.0")
    index.add("demo-holder", "1.0", requires=("demo-held<2",))  # holds demo-held back from the newest release...
    calls = []
    unpack = wheelinstall.unpack_wheels
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: calls.extend(p.name for p in w) or unpack(w, parent, **kw))
    # ...and has an environment marker, so it gets no head start and its requirement is seen only by uv
    path = write_recipe(f"name: held\npackages: ['demo-held', 'demo-holder; python_version >= \"3\"']\npython: ['3.11']\n"
                        f"index_url: {index.simple_url}\n", filename="held.yaml")  # fmt: skip
    begun = []
    begin = wheels.WheelPipeline.begin
    monkeypatch.setattr(wheels.WheelPipeline, "begin", lambda self, d, speculative, **kw: begun.append((d.file.filename, speculative)) or begin(self, d, speculative, **kw))
    result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert ("demo_held-2.0-py3-none-any.whl", True) in begun  # guessed while uv resolved...
    with zipfile.ZipFile(tmp_path / "dist" / "held-python3.11-x86_64.zip") as archive:
        names = archive.namelist()
        assert archive.read("python/demo_held/__init__.py") == b"HELD_BACK = True\n"  # ...but the lock's 1.0 is installed
        assert "python/demo_held-1.0.dist-info/METADATA" in names and not any("demo_held-2.0" in n for n in names)


def test_what_a_head_started_wheel_requires_gets_a_head_start_within_every_requirement_seen(index, tmp_path, invoke, write_recipe, monkeypatch):
    index.add("demo-app", "1.0", requires=("demo-lib>=1", "demo-tool; extra == 'cli'", "demo-win; platform_system == 'Windows'"))
    index.add("demo-lib", "1.0", files={"demo_lib/__init__.py": b"LIB = 1\n"})
    index.add("demo-lib", "2.0")
    index.add("demo-other", "1.0", requires=("demo-lib<2",))  # narrows demo-lib, whichever page comes first
    for name in ("demo-tool", "demo-win"):
        index.add(name, "1.0")
    begun, calls = [], []
    begin, unpack = wheels.WheelPipeline.begin, wheelinstall.unpack_wheels
    monkeypatch.setattr(wheels.WheelPipeline, "begin", lambda self, d, speculative, **kw: begun.append((d.file.filename, speculative)) or begin(self, d, speculative, **kw))
    monkeypatch.setattr(wheelinstall, "unpack_wheels", lambda w, parent, **kw: calls.extend((parent.name, p.name) for p in w) or unpack(w, parent, **kw))
    path = write_recipe(f"name: tree\npackages: ['demo-app', 'demo-other']\npython: ['3.11']\nindex_url: {index.simple_url}\n", filename="tree.yaml")
    result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert ("demo_lib-1.0-py3-none-any.whl", True) in begun  # a dependency, begun before the lock, within <2
    assert ("pipeline", "demo_lib-1.0-py3-none-any.whl") in calls and calls.count(("pipeline", "demo_lib-1.0-py3-none-any.whl")) == 1
    assert not any("demo_tool" in f or "demo_win" in f for f, _ in begun)  # an extra not asked for, another platform
    with zipfile.ZipFile(tmp_path / "dist" / "tree-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_lib/__init__.py") == b"LIB = 1\n"


def test_no_head_start_when_an_extra_index_may_hold_the_locked_release(tmp_path, invoke, write_recipe, monkeypatch):
    """uv may lock a release from an extra index (torch's CPU builds): a guess from the main index could be a
    0.9 GB download of the wrong file, so recipes with extra indexes get none, pinned or not."""
    from faultproxy import PackageIndex

    begun = []
    begin = wheels.WheelPipeline.begin
    monkeypatch.setattr(wheels.WheelPipeline, "begin", lambda self, d, speculative, **kw: begun.append(speculative) or begin(self, d, speculative, **kw))
    with PackageIndex() as primary, PackageIndex() as extra:
        primary.add("demo-main", "1.0")
        primary.add("demo-pinned", "1.0")
        extra.add("demo-main", "1.0+cpu")
        path = write_recipe(f"name: ex\npackages: ['demo-main', 'demo-pinned==1.0']\npython: ['3.11']\nindex_url: {primary.simple_url}\n"
                            f"extra_index_urls: [{extra.simple_url}]\n", filename="ex.yaml")  # fmt: skip
        result = invoke("build", path, "--out", tmp_path / "dist", env={"UV_CACHE_DIR": str(tmp_path / "uv")})
    assert result.exit_code == 0, result.stderr
    assert begun and True not in begun  # every wheel begun from the lock, none guessed


def test_a_head_start_the_lock_did_not_confirm_ends_without_a_trace(index, tmp_path, monkeypatch):
    from layerbuild.backends.wheels import store as wheelstore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    filename, data = index.add("demo-wrong", "2.0", files={"demo_wrong/__init__.py": b"x" * 3_000_000})
    download = download_for(index, filename, data, "demo-wrong")
    head = wheels.WheelPipeline(tmp_path / "work")
    with wheelstore._locks_guard:
        held = wheelstore._locks.setdefault(filename, threading.Lock())
    with held:  # the head start waits here until the lock is known
        head.begin(download, speculative=True)
        head.drop_head_starts_except({"demo_wrong-1.0-py3-none-any.whl"})  # the lock chose 1.0
    with pytest.raises((wheelstore.Cancelled, wheelinstall.Stopped)):
        head._results[filename].result(timeout=30)
    head.stop()
    assert wheelstore.find_stored(download) is None and not list(wheelstore.store_root().rglob("*.part"))
    assert not list((tmp_path / "work").rglob("__init__.py"))  # nothing unpacked


def test_a_cancelled_download_leaves_nothing_in_the_store(index, tmp_path):
    from layerbuild.backends.wheels import store as wheelstore

    filename, data = index.add("demo-cancel", "1.0")
    download = download_for(index, filename, data, "demo-cancel")
    with pytest.raises(wheelstore.Cancelled):
        wheelstore.fetch(download, tmp_path / "store", cancelled=lambda: True)
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert wheelstore.fetch(download, tmp_path / "store").read_bytes() == data  # and a later fetch is not hindered


def test_a_confirmed_head_start_is_waited_for_however_long_it_takes(index, tmp_path, monkeypatch):
    """A slow download that keeps making progress (a big wheel on a slow link) is not abandoned and begun
    again: only a read that times out ends it."""
    from faultproxy import SLOW, FaultPlan

    monkeypatch.setenv("UV_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    filename, data = index.add("demo-big", "1.0", files={"demo_big/__init__.py": bytes(range(256)) * 4000})
    index.fault(FaultPlan(SLOW, count=1, match=filename, stall_seconds=8))  # 8 s in all, a piece every 0.4 s
    download = download_for(index, filename, data, "demo-big")
    head = wheels.WheelPipeline(tmp_path / "work")
    head.begin(download, speculative=True)
    unpacked = head.take(filename, download.allowed)
    head.stop()
    assert unpacked is not None and (unpacked.scratch / "demo_big" / "__init__.py").read_bytes() == bytes(range(256)) * 4000
    assert sum(r == f"GET /files/{filename}" for r in index.requests) == 1


def test_once_the_lock_is_known_its_choices_stay_and_no_guess_begins(index, tmp_path):
    chosen, data = index.add("demo-kept", "1.6")
    late, late_data = index.add("demo-kept", "1.4")
    pipeline = wheels.WheelPipeline(tmp_path / "work")
    pipeline.begin(download_for(index, chosen, data, "demo-kept"), speculative=True)
    pipeline.drop_head_starts_except({chosen})  # the lock chose 1.6
    pipeline.drop_head_starts_except(set(), only={chosen})  # a late second guess (a wheel asking for <1.5)...
    pipeline.begin(download_for(index, late, late_data, "demo-kept"), speculative=True)  # ...and its new guess
    assert pipeline.take(chosen, frozenset({hashlib.sha256(data).hexdigest()})) is not None  # 1.6 still comes
    assert late not in pipeline._results
    pipeline.stop()


def test_a_head_start_hands_over_only_the_file_the_lock_allows(index, tmp_path):
    filename, data = index.add("demo-head", "1.0")
    download = download_for(index, filename, data, "demo-head")
    head = wheels.WheelPipeline(tmp_path / "work")
    head.begin(download, speculative=True)
    unpacked = head.take(filename, download.allowed)
    assert unpacked is not None and (unpacked.scratch / "demo_head" / "__init__.py").read_bytes() == b"VERSION = '1.0'\n"
    assert unpacked.wheel.read_bytes() == data and unpacked.wheel.is_relative_to(tmp_path / "work")  # a private copy
    assert head.take(filename, frozenset({"0" * 64})) is None  # the lock wants other bytes: installed the usual way
    assert head.take("demo_head-2.0-py3-none-any.whl", download.allowed) is None  # never started
    head.stop()


def test_once_stopped_a_head_start_writes_nothing_in_the_build(index, tmp_path):
    filename, data = index.add("demo-late", "1.0")
    head = wheels.WheelPipeline(tmp_path / "work")
    head.stop()  # the build ended (failed, or was interrupted) before the download came back
    head.begin(download_for(index, filename, data, "demo-late"), speculative=True)
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
    assert parents == ["pipeline"]  # unpacked while uv resolved, not again by the install
    with zipfile.ZipFile(tmp_path / "dist" / "pin-python3.11-x86_64.zip") as archive:
        assert archive.read("python/demo_pin/__init__.py") == b"PINNED = True\n"
        assert "python/demo_pin-1.0.dist-info/INSTALLER" in archive.namelist()


def test_a_failure_of_a_wheel_begun_from_the_lock_is_the_builds_and_a_speculative_one_is_not(index, tmp_path):
    filename, data = index.add("demo-bad", "1.0")
    index.served[filename] = b"not the listed bytes"
    download = download_for(index, filename, data, "demo-bad")
    locked = wheels.WheelPipeline(tmp_path / "locked")
    locked.begin(download, speculative=False)
    with pytest.raises(ResolveError, match="^hash mismatch for demo-bad"):
        locked.take(filename, download.allowed)
    guess = wheels.WheelPipeline(tmp_path / "guess")
    guess.begin(download, speculative=True)
    assert guess.take(filename, download.allowed) is None  # the usual way runs next and says what is wrong
    for pipeline in (locked, guess):
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
    pipeline.begin(download, speculative=True)  # the head start, then the install with the lock's hashes
    pipeline.begin(download, speculative=False)
    assert pipeline.take(filename, download.allowed) is not None
    pipeline.stop()
    assert len(calls) == 1
    assert sum("/files/" in r for r in index.requests) == 1
