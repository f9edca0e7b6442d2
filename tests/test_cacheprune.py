"""Bounding the build cache: LRU selection (pure), pruning real entries on disk, the CLI, and the
automatic cap after real builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.cache import builds as cache
from layerbuild.cache import prune as cacheprune
from layerbuild.cache.prune import (
    CacheSettingError,
    EntryInfo,
    parse_age,
    parse_size,
    select_for_pruning,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(cacheprune.MAX_SIZE_ENV, raising=False)
    return tmp_path / "xdg" / "layerbuild" / "builds"


def info(key: str, size: int, last_used: float) -> EntryInfo:
    return EntryInfo(key, Path("/nowhere") / key, size, last_used)


# --- selection and parsing (pure) -------------------------------------------------------------


def test_size_cap_removes_least_recently_used_first():
    entries = [info("a", 40, 300.0), info("b", 40, 100.0), info("c", 40, 200.0)]
    assert [e.key for e in select_for_pruning(entries, max_size=100, now=400)] == ["b"]
    assert [e.key for e in select_for_pruning(entries, max_size=40, now=400)] == ["b", "c"]
    assert [e.key for e in select_for_pruning(entries, max_size=0, now=400)] == ["b", "c", "a"]
    assert select_for_pruning(entries, max_size=120, now=400) == []


def test_age_and_size_combine_and_ties_break_by_key():
    entries = [info("z", 10, 100.0), info("y", 10, 100.0), info("x", 10, 900.0)]
    assert [e.key for e in select_for_pruning(entries, older_than=500, now=1000)] == ["y", "z"]
    assert [e.key for e in select_for_pruning(entries, max_size=20, now=1000)] == ["y"]
    assert [e.key for e in select_for_pruning(entries, older_than=50, max_size=0, now=1000)] == ["y", "z", "x"]
    assert [e.key for e in select_for_pruning(entries, everything=True)] == ["x", "y", "z"]
    assert select_for_pruning(entries, now=1000) == []


@pytest.mark.parametrize("text, expected", [("0", 0), ("512", 512), ("500MB", 500_000_000), ("2GiB", 2 * 1024**3),
                                            ("1.5g", 1_500_000_000), (" 10 kib ", 10240)])  # fmt: skip
def test_sizes(text, expected):
    assert parse_size(text, "--max-size") == expected


@pytest.mark.parametrize("text", ["", "-1", "5XB", "lots", "1e9", "MB"])
def test_bad_sizes_name_the_option_and_an_example(text):
    with pytest.raises(CacheSettingError) as caught:
        parse_size(text, "--max-size")
    assert str(caught.value).startswith(f"--max-size: {text!r} is not a size") and "2GiB" in str(caught.value)


def test_ages():
    assert parse_age("30d", "--older-than") == 30 * 86400
    assert parse_age("12h", "x") == 12 * 3600 and parse_age("2w", "x") == 14 * 86400 and parse_age("90s", "x") == 90
    for bad in ("3", "d", "3y", "-1d"):
        with pytest.raises(CacheSettingError, match="is not an age"):
            parse_age(bad, "--older-than")


def test_configured_cap_default_off_and_bad(monkeypatch):
    assert cacheprune.configured_max_size({}) == cacheprune.DEFAULT_MAX_SIZE
    assert cacheprune.configured_max_size({cacheprune.MAX_SIZE_ENV: "off"}) is None
    assert cacheprune.configured_max_size({cacheprune.MAX_SIZE_ENV: "1GB"}) == 10**9
    with pytest.raises(CacheSettingError, match="^LAYERBUILD_CACHE_MAX_SIZE: 'lots' is not a size"):
        cacheprune.configured_max_size({cacheprune.MAX_SIZE_ENV: "lots"})


# --- real entries on disk ---------------------------------------------------------------------


def stored(tmp_path: Path, key_char: str, size: int, last_used: float) -> cache.CacheEntry:
    """A real cache entry (cache.store) of a zip of `size` bytes, last used at `last_used`."""
    zip_path, manifest_path = tmp_path / f"{key_char}.zip", tmp_path / f"{key_char}.json"
    zip_path.write_bytes(os.urandom(size))
    manifest_path.write_text("{}")
    entry = cache.store(key_char * 64, zip_path, manifest_path)
    assert entry is not None
    os.utime(entry.directory / cache.ENTRY_NAME, (last_used, last_used))
    return entry


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prune_removes_lru_entries_and_killed_stores_only(tmp_path, private_cache):
    old, mid, new = stored(tmp_path, "a", 3000, 1000.0), stored(tmp_path, "b", 3000, 2000.0), stored(tmp_path, "c", 3000, 3000.0)
    killed = private_cache / "dd" / f".{'d' * 12}.{dead_pid()}.x1y2.tmp"
    live = private_cache / "dd" / f".{'e' * 12}.{os.getpid()}.x1y3.tmp"
    for staging in (killed, live):
        staging.mkdir(parents=True)
        (staging / cache.ZIP_NAME).write_bytes(b"half")
    assert {e.key[0] for e in cacheprune.list_entries()} == {"a", "b", "c"}  # staging dirs are not entries
    report = cacheprune.prune(max_size=7000)
    assert [e.key[0] for e in report.removed] == ["a"] and report.freed_bytes > 3000
    assert not old.directory.exists() and mid.directory.exists() and new.directory.exists()
    assert report.leftovers == [killed] and not killed.exists() and live.exists()
    assert report.kept == 2
    # A hit makes an entry the most recently used: b (older than c) now survives a cut to one entry.
    found, state = cache.lookup(mid.key)
    assert state == "hit" and found is not None
    cacheprune.prune(max_size=3500)
    assert mid.directory.exists() and not new.directory.exists()


def test_cli_info_and_prune(invoke, tmp_path, private_cache):
    for char, when in (("a", 1000.0), ("b", 2000.0)):
        stored(tmp_path, char, 2000, when)
    result = invoke("cache", "info", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["entries"] == 2 and data["path"] == str(private_cache) and data["max_bytes"] == cacheprune.DEFAULT_MAX_SIZE
    result = invoke("cache", "prune", "--older-than", "1d", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["removed"] == 2  # 1970 is more than a day ago
    stored(tmp_path, "c", 2000, 1000.0)
    result = invoke("cache", "prune", "--all")
    assert result.exit_code == 0 and result.stdout.startswith("removed 1 entries")
    assert cacheprune.list_entries() == []


@pytest.mark.parametrize("args, message", [
    (["--max-size", "5XB"], "error: --max-size: '5XB' is not a size"),
    (["--older-than", "3"], "error: --older-than: '3' is not an age"),
    (["--all", "--max-size", "1GB"], "error: --all empties the cache: give it alone"),
])  # fmt: skip
def test_cli_bad_options_are_one_line(invoke, tmp_path, args, message):
    stored(tmp_path, "a", 100, 1000.0)
    result = invoke("cache", "prune", *args)
    assert result.exit_code == 1 and result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert len(cacheprune.list_entries()) == 1  # nothing removed


# --- the automatic cap after real builds ------------------------------------------------------


@pytest.mark.network
def test_builds_keep_the_cache_under_its_cap(invoke, write_recipe, tmp_path, monkeypatch):
    first = write_recipe(name="one", packages=["six"], python=["3.11"], bytecode="none")
    second = write_recipe(name="two", packages=["six"], python=["3.11"], bytecode="none")  # another key, same size
    out = tmp_path / "dist"
    assert invoke("build", first, "--out", out).exit_code == 0
    everything = cacheprune.list_entries()
    one = [e for e in everything if e.kind == "build"]
    wheels = [e for e in everything if e.kind == "wheel"]
    assert len(one) == 1 and len(wheels) == 1  # the layer, and six's wheel
    # A cap that holds one build and the wheel: the second build's store evicts the first build
    # (least recently used); the wheel, used again by the second build, stays.
    monkeypatch.setenv(cacheprune.MAX_SIZE_ENV, str(wheels[0].size + one[0].size * 3 // 2))
    os.utime(one[0].directory / cache.ENTRY_NAME, (1000.0, 1000.0))
    result = invoke("build", second, "--out", out)
    assert result.exit_code == 0, result.output
    left = cacheprune.list_entries()
    assert sorted(e.kind for e in left) == ["build", "wheel"]
    assert one[0].key not in {e.key for e in left} and wheels[0].key in {e.key for e in left}
    assert (out / "one-python3.11-x86_64.zip").is_file()  # dist/ is never touched by pruning
    monkeypatch.setenv(cacheprune.MAX_SIZE_ENV, "huge")
    result = invoke("build", first, "--out", out)
    assert result.exit_code == 1 and result.stderr.startswith("error: LAYERBUILD_CACHE_MAX_SIZE: 'huge' is not a size")


@pytest.mark.network
def test_info_counts_wheels_and_bytecode_and_prune_all_empties_every_store(invoke, write_recipe, tmp_path):
    recipe = write_recipe(name="stores", packages=["six"], python=["3.11"])
    assert invoke("build", recipe, "--out", tmp_path / "dist").exit_code == 0
    data = json.loads(invoke("cache", "info", "--json").stdout)
    assert data["entries"] == 1 and data["wheels"] == 1 and data["bytecode_packs"] == 1 and data["bytecode_modules"] >= 1
    assert data["wheel_bytes"] > 0 and data["bytecode_bytes"] > 0
    text = invoke("cache", "info").stdout
    assert "wheels:   1 (" in text and "bytecode: " in text and "runtime packages: 0 (" in text and "for all four" in text
    # A partial download and a staging file of killed processes go with a prune as well.
    dead = 2**22 + 12345  # above any pid this machine hands out
    (cacheprune.wheel_root(cache.cache_root()) / f".{dead}.abc.part").write_bytes(b"half")
    pruned = json.loads(invoke("cache", "prune", "--all", "--json").stdout)
    assert pruned["removed"] == 2 + data["bytecode_packs"] and pruned["leftovers_removed"] == 1
    assert cacheprune.list_entries() == []
    assert not list(cacheprune.wheel_root(cache.cache_root()).glob(".*.part"))


def test_the_runtimes_packages_are_entries_of_the_cache_pruned_like_the_rest(tmp_path):
    sdk = cacheprune.runtime_sdk_root(cache.cache_root()) / "python3.12-0123456789abcdef"
    (sdk / "site" / "boto3").mkdir(parents=True)
    (sdk / "site" / "boto3" / "__init__.py").write_bytes(b"x" * 1000)
    (sdk / cacheprune.RUNTIME_SDK_MARKER).write_text(json.dumps({"runtime": "python3.12", "bytes": 1000}))
    (sdk.parent / f".{os.getpid()}.python3.12.abc").mkdir()  # an install under way is no entry, and stays
    (sdk.parent / f".{2**22 + 7}.python3.12.def").mkdir()  # a killed one's goes with a prune
    [entry] = [e for e in cacheprune.list_entries() if e.kind == "runtime-sdk"]
    assert (entry.key, entry.size) == ("python3.12-0123456789abcdef", 1000)
    report = cacheprune.prune(max_size=0)
    assert entry.key in {e.key for e in report.removed} and not sdk.exists()
    assert [p.name for p in sdk.parent.iterdir()] == [f".{os.getpid()}.python3.12.abc"]
