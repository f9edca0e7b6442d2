"""The wheels backend's own downloads and install: choosing the file, the store, unpacking, and
copying the wheels' deflated members into the layer zip.

Index behaviour is tested against the loopback PEP 503 index (tests/faultproxy.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
import zlib

import pytest
from faultproxy import TRUNCATE, FaultPlan, PackageIndex, make_wheel

from layerbuild.backends.wheels import store as wheelstore
from layerbuild.backends.wheels.index import IndexFile, parse_listing, project_listing
from layerbuild.backends.wheels.install import (
    UnsafeWheelError,
    install_wheels,
    installed_path,
)
from layerbuild.backends.wheels.pick import (
    LockedPin,
    choose_wheel,
    tag_runs_on,
    target_priority,
)
from layerbuild.errors import ResolveError
from layerbuild.model.runtimes import RUNTIMES, Target
from layerbuild.util.zipwriter import Entry, RawSource, write_zip

PY311 = Target(RUNTIMES["3.11"], "x86_64")
PY312_ARM = Target(RUNTIMES["3.12"], "arm64")


def listed(*names: str, sha: str | None = None) -> list[IndexFile]:
    return [IndexFile(n, f"https://files.example/{n}", sha) for n in names]


# --- choosing the file (pure) -----------------------------------------------------------------------


def test_the_targets_own_abi_and_newest_allowed_glibc_win():
    pin = LockedPin("numpy", "2.2.6", frozenset())
    files = listed(
        "numpy-2.2.6-cp311-cp311-manylinux_2_28_x86_64.whl",  # glibc 2.28: not on python3.11's Amazon Linux 2
        "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-2.2.6-cp311-abi3-manylinux_2_24_x86_64.whl",
        "numpy-2.2.6-cp312-cp312-manylinux_2_17_x86_64.whl",
        "numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.whl",
        "numpy-2.2.6.tar.gz",
    )
    chosen = choose_wheel(files, pin, target_priority(PY311))
    assert chosen.filename == "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def test_newer_glibc_wins_where_the_runtime_has_it_and_arm64_means_aarch64():
    pin = LockedPin("pillow", "12.2.0", frozenset())
    files = listed("pillow-12.2.0-cp312-cp312-manylinux_2_17_aarch64.whl", "pillow-12.2.0-cp312-cp312-manylinux_2_28_aarch64.whl",
                   "pillow-12.2.0-cp312-cp312-manylinux_2_28_x86_64.whl")  # fmt: skip
    assert choose_wheel(files, pin, target_priority(PY312_ARM)).filename == "pillow-12.2.0-cp312-cp312-manylinux_2_28_aarch64.whl"


def test_pure_python_wheel_other_versions_and_nothing_suitable():
    ranks = target_priority(PY311)
    pin = LockedPin("pymysql", "1.2.4", frozenset())
    assert choose_wheel(listed("PyMySQL-1.2.4-py3-none-any.whl", "PyMySQL-1.2.3-py3-none-any.whl"), pin, ranks).filename \
        == "PyMySQL-1.2.4-py3-none-any.whl"  # fmt: skip
    assert choose_wheel(listed("PyMySQL-1.2.3-py3-none-any.whl", "PyMySQL-1.2.4.tar.gz", "not-a-wheel.whl"), pin, ranks) is None


def test_a_file_listed_with_the_locks_hash_beats_a_better_tag_listed_with_another():
    good = "a" * 64
    pin = LockedPin("demo", "1.0", frozenset({good}))
    files = [IndexFile("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "u1", "b" * 64),
             IndexFile("demo-1.0-py3-none-any.whl", "u2", good)]  # fmt: skip
    assert choose_wheel(files, pin, target_priority(PY311)).url == "u2"
    # Nothing listed with the lock's hash: the best file is still chosen, and the download's check will refuse it.
    assert choose_wheel(files[:1], pin, target_priority(PY311)).url == "u1"


def test_a_version_spelled_otherwise_in_the_file_name_is_still_found():
    ranks = target_priority(PY311)
    files = listed(*[f"demo-{v}-py3-none-any.whl" for v in ("0.9", "1.0.1", "1.0")])
    assert choose_wheel(files, LockedPin("demo", "1.0.0", frozenset()), ranks).filename == "demo-1.0-py3-none-any.whl"
    assert choose_wheel(files, LockedPin("demo", "1.0", frozenset()), ranks).filename == "demo-1.0-py3-none-any.whl"
    # The exactly spelled file is listed with a hash outside the lock, another spelling with the lock's: that one.
    pin = LockedPin("demo", "2.0", frozenset({"a" * 64}))
    files = [IndexFile("demo-2.0-py3-none-any.whl", "u1", "b" * 64), IndexFile("demo-2.0.0-py3-none-any.whl", "u2", "a" * 64)]
    assert choose_wheel(files, pin, ranks).url == "u2"


def test_listing_urls_are_absolute_whether_the_page_gave_them_so_or_not():
    body = json.dumps({"files": [{"filename": "a-1.0-py3-none-any.whl", "url": "../../files/a-1.0-py3-none-any.whl", "hashes": {}},
                                 {"filename": "a-1.1-py3-none-any.whl", "url": "https://cdn.example/a-1.1-py3-none-any.whl",
                                  "hashes": {"sha256": "ab" * 32}}]})  # fmt: skip
    files = parse_listing(body, "application/vnd.pypi.simple.v1+json", "http://127.0.0.1:9/simple/a/")
    assert [(f.url, f.sha256) for f in files] == [("http://127.0.0.1:9/files/a-1.0-py3-none-any.whl", None),
                                                  ("https://cdn.example/a-1.1-py3-none-any.whl", "ab" * 32)]  # fmt: skip


@pytest.mark.parametrize("tag, target, runs", [
    ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", PY311, True),  # compressed tag set
    ("cp311-cp311-manylinux_2_24_x86_64", PY311, True),  # glibc 2.24 <= Amazon Linux 2's 2.26
    ("cp311-cp311-manylinux_2_28_x86_64", PY311, False),  # glibc 2.28: too new for python3.11
    ("cp312-cp312-manylinux_2_17_x86_64", PY311, False),  # another interpreter
    ("cp39-abi3-manylinux2014_x86_64", PY311, True),  # stable ABI of an older Python
    ("cp312-abi3-manylinux2014_x86_64", PY311, False),  # stable ABI of a newer one
    ("cp311-cp311-manylinux_2_17_aarch64", PY311, False),  # another architecture
    ("cp311-cp311-linux_x86_64", PY311, False),  # built on the host: no manylinux promise
    ("py2.py3-none-any", PY311, True),
    ("py3-none-any", PY312_ARM, True),
    ("cp312-cp312-manylinux_2_28_aarch64", PY312_ARM, True),
    ("cp312-cp312-manylinux_2_34_aarch64", PY312_ARM, True),  # Amazon Linux 2023: glibc 2.34
    ("cp312-cp312-manylinux_2_35_aarch64", PY312_ARM, False),
])
def test_an_installed_wheels_tags_are_judged_by_the_rule_that_picks_files(tag, target, runs):
    assert tag_runs_on(tag, target) is runs


def test_listing_pages_give_absolute_urls_and_listed_hashes():
    page = "https://mirror.example/simple/demo/"
    html = ('<a href="../../files/demo-1.0-py3-none-any.whl#sha256=' + "c" * 64 + '">x</a>'
            '<a href="https://cdn.example/demo-1.0.tar.gz?x=1&amp;y=2">y</a>')  # fmt: skip
    files = parse_listing(html, "text/html", page)
    assert files == [IndexFile("demo-1.0-py3-none-any.whl", "https://mirror.example/files/demo-1.0-py3-none-any.whl", "c" * 64),
                     IndexFile("demo-1.0.tar.gz", "https://cdn.example/demo-1.0.tar.gz?x=1&y=2", None)]  # fmt: skip
    body = json.dumps({"files": [{"filename": "demo-1.0-py3-none-any.whl", "url": "/f/demo.whl", "hashes": {"sha256": "d" * 64}}]})
    assert parse_listing(body, "application/vnd.pypi.simple.v1+json", page) == [
        IndexFile("demo-1.0-py3-none-any.whl", "https://mirror.example/f/demo.whl", "d" * 64)]


def test_listing_pages_say_which_files_are_yanked_and_which_pythons_they_need():
    page = "https://mirror.example/simple/demo/"
    html = ('<a href="/f/demo-1.0-py3-none-any.whl" data-requires-python="&gt;=3.8">a</a>\n'
            '<a data-yanked="broken build" href="/f/demo-1.1-py3-none-any.whl">b</a>\n'
            '<a href="/f/demo-1.2-py3-none-any.whl" data-yanked>c</a>\n'
            '<A HREF="/f/demo-1.3-py3-none-any.whl" data-requires-python=">=3.12">d</A>\n'  # left unescaped by some indexes
            "<a href='/f/demo-1.4-py3-none-any.whl' data-requires-python='&gt;=3.9'>e</a>\n"
            '<a href="/f/demo-1.5-py3-none-any.whl" title=it\'s>f</a>\n'  # a stray quote
            '<link href="/static/style.css">')  # fmt: skip
    files = parse_listing(html, "text/html", page)
    assert [(f.filename, f.yanked, f.requires_python) for f in files] == [
        ("demo-1.0-py3-none-any.whl", False, ">=3.8"), ("demo-1.1-py3-none-any.whl", True, None),
        ("demo-1.2-py3-none-any.whl", True, None), ("demo-1.3-py3-none-any.whl", False, ">=3.12"),
        ("demo-1.4-py3-none-any.whl", False, ">=3.9"), ("demo-1.5-py3-none-any.whl", False, None)]
    entries = [{"filename": f"demo-1.{i}-py3-none-any.whl", "url": f"/f/{i}", "hashes": {}, **extra}
               for i, extra in enumerate([{"yanked": False, "requires-python": ">=3.9"}, {"yanked": True},
                                          {"yanked": "security hole"}, {"yanked": ""}, {"requires-python": None}])]  # fmt: skip
    files = parse_listing(json.dumps({"files": entries}), "application/vnd.pypi.simple.v1+json", page)
    assert [(f.yanked, f.requires_python) for f in files] == [(False, ">=3.9"), (True, None), (True, None), (True, None), (False, None)]


# --- unpacking ----------------------------------------------------------------------------------------


def wheel_file(tmp_path, members: dict[str, bytes], modes: dict[str, int] | None = None, name="demo-1.0-py3-none-any.whl"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (modes or {}).get(member, 0o644) << 16
            info.compress_type = zipfile.ZIP_STORED if member.endswith(".stored") else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def test_install_places_data_schemes_rewrites_record_and_keeps_exec_bits(tmp_path):
    members = {
        "demo/__init__.py": b"X = 1\n" * 50,
        "demo/tool.sh": b"#!/bin/sh\necho hi\n",
        "demo/blob.stored": b"raw",
        "demo-1.0.data/purelib/demo_extra.py": b"Y = 2\n",
        "demo-1.0.data/platlib/demo_native/mod.py": b"Z = 3\n",
        "demo-1.0.data/scripts/demo-cli": b"#!python\n",
        "demo-1.0.data/headers/demo.h": b"int x;\n",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/RECORD": (b"demo/__init__.py,sha256=abc,300\ndemo-1.0.data/purelib/demo_extra.py,sha256=def,6\n"
                                      b"demo-1.0.data/headers/demo.h,sha256=ghi,7\ndemo-1.0.dist-info/RECORD,,\n"),
    }
    wheel = wheel_file(tmp_path, members, modes={"demo/tool.sh": 0o755})
    site = tmp_path / "layer" / "python"
    raws = install_wheels([wheel], site)

    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert files == ["bin/demo-cli", "demo-1.0.dist-info/INSTALLER", "demo-1.0.dist-info/METADATA", "demo-1.0.dist-info/RECORD",
                     "demo/__init__.py", "demo/blob.stored", "demo/tool.sh", "demo_extra.py", "demo_native/mod.py"]  # fmt: skip
    assert (site / "demo" / "tool.sh").stat().st_mode & 0o777 == 0o755
    assert (site / "demo" / "__init__.py").stat().st_mode & 0o777 == 0o644
    record = (site / "demo-1.0.dist-info" / "RECORD").read_text().splitlines()
    assert record == ["demo-1.0.dist-info/INSTALLER,,", "demo-1.0.dist-info/RECORD,,", "demo/__init__.py,sha256=abc,300",
                      "demo_extra.py,sha256=def,6"]  # fmt: skip
    assert not list(tmp_path.joinpath("layer").glob(".unpack-*"))  # scratch directories merged away
    # Every deflated member is offered for reuse, with bytes that inflate to the installed file; stored ones are not.
    assert "demo/blob.stored" not in raws and "demo-1.0.dist-info/RECORD" not in raws
    raw = raws["demo_extra.py"]
    with open(raw.archive, "rb") as handle:
        handle.seek(raw.header_offset)
        header = handle.read(30)
        skip = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
        handle.seek(raw.header_offset + 30 + skip)
        assert zlib.decompress(handle.read(raw.compress_size), -15) == b"Y = 2\n"


def test_large_members_are_streamed_with_the_same_result(tmp_path, monkeypatch):
    import layerbuild.backends.wheels.install as wheelinstall

    monkeypatch.setattr(wheelinstall, "STREAM_ABOVE", 1000)
    big = bytes(range(256)) * 40  # 10 KB: over the lowered threshold
    wheel = wheel_file(tmp_path, {"demo/big.bin": big, "demo/small.py": b"x = 1\n", "demo-1.0.dist-info/RECORD": b""})
    site = tmp_path / "site"
    install_wheels([wheel], site)
    assert (site / "demo" / "big.bin").read_bytes() == big
    assert (site / "demo" / "small.py").read_bytes() == b"x = 1\n"


def test_two_wheels_sharing_a_path_end_with_the_later_name_whatever_the_timing(tmp_path):
    first = wheel_file(tmp_path, {"shared/__init__.py": b"A\n", "a-1.0.dist-info/RECORD": b""}, name="a-1.0-py3-none-any.whl")
    second = wheel_file(tmp_path, {"shared/__init__.py": b"B\n", "b-1.0.dist-info/RECORD": b""}, name="b-1.0-py3-none-any.whl")
    site = tmp_path / "site"
    install_wheels([second, first], site)
    assert (site / "shared" / "__init__.py").read_bytes() == b"B\n"


@pytest.mark.parametrize("member, words", [
    ("../escape.py", "climbs out"),
    ("/etc/evil.py", "absolute path"),
    ("C:/evil.py", "absolute path"),
])  # fmt: skip
def test_unsafe_member_names_are_refused_before_anything_is_written(tmp_path, member, words):
    wheel = wheel_file(tmp_path, {"demo/__init__.py": b"", member: b"x", "demo-1.0.dist-info/RECORD": b""})
    site = tmp_path / "site"
    with pytest.raises(UnsafeWheelError) as caught:
        install_wheels([wheel], site)
    assert words in str(caught.value) and "demo-1.0-py3-none-any.whl" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "escape.py").exists()
    assert not [p for p in site.rglob("*") if p.is_file()]


def test_a_damaged_wheel_is_a_clear_error(tmp_path):
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UnsafeWheelError, match="demo-1.0-py3-none-any.whl: damaged wheel"):
        install_wheels([path], tmp_path / "site")


def test_a_member_whose_bytes_fail_their_crc_names_the_wheel_and_member(tmp_path):
    wheel = wheel_file(tmp_path, {"demo/__init__.py": b"GOOD = 1\n" * 100, "demo-1.0.dist-info/RECORD": b""})
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("demo/__init__.py")
    data[info.header_offset + 30 + len(info.filename) + 3] ^= 0xFF  # flip a bit in the deflate stream
    wheel.write_bytes(bytes(data))
    with pytest.raises(UnsafeWheelError) as caught:
        install_wheels([wheel], tmp_path / "site")
    assert str(caught.value).startswith("demo-1.0-py3-none-any.whl: damaged wheel, member 'demo/__init__.py'")


def test_installed_path_rules():
    assert installed_path("pkg/a.py", "pkg-1.data") == "pkg/a.py"
    assert installed_path("pkg-1.data/purelib/x/y.py", "pkg-1.data") == "x/y.py"
    assert installed_path("pkg-1.data/data/share/z", "pkg-1.data") == "share/z"
    assert installed_path("pkg-1.data/headers/h.h", "pkg-1.data") is None
    assert installed_path("pkg-1.data/unknown/q", "pkg-1.data") is None


# --- copying deflated members into the layer zip --------------------------------------------------


def raw_member(wheel, name) -> tuple[RawSource, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(name)
    with open(wheel, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        skip = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
        handle.seek(info.header_offset + 30 + skip)
        payload = handle.read(info.compress_size)
    return RawSource(str(wheel), info.header_offset, info.compress_size, info.CRC, info.file_size), payload


def test_unchanged_files_reuse_the_wheels_deflated_bytes_and_changed_ones_are_compressed_afresh(tmp_path):
    big = bytes(range(256)) * 20000  # over the chunking threshold: a reused entry must still be one piece
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("a.py", b"A = 1\n" * 400, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        archive.writestr("big.so", big, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
        archive.writestr("b.py", b"B = 2\n" * 400, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_bytes(b"A = 1\n" * 400)
    (tree / "big.so").write_bytes(big)
    (tree / "b.py").write_bytes(b"C = 3\n" * 400)  # same size as the wheel's b.py, other bytes (slimming changed it)
    raws = {n: raw_member(wheel, n) for n in ("a.py", "big.so", "b.py")}
    entries = [Entry(n, 0o644 << 16, str(tree / n), raws[n][0]) for n in ("a.py", "big.so", "b.py")]

    dest = tmp_path / "layer.zip"
    write_zip(str(dest), entries, level=6)
    with zipfile.ZipFile(dest) as archive:
        assert archive.testzip() is None
        assert {n: archive.read(n) for n in archive.namelist()} == {n: (tree / n).read_bytes() for n in ("a.py", "big.so", "b.py")}
    for name in ("a.py", "big.so"):
        assert raw_member(dest, name)[1] == raws[name][1]  # byte for byte what the wheel holds
    assert raw_member(dest, "b.py")[1] != raws["b.py"][1]
    single = tmp_path / "single.zip"
    write_zip(str(single), entries, level=6, threads=1)
    assert single.read_bytes() == dest.read_bytes()


def test_copying_from_more_wheels_than_are_kept_open_gives_the_same_zip_and_leaves_none_open(tmp_path, monkeypatch):
    import os

    from layerbuild.util import zipwriter

    tree = tmp_path / "tree"
    tree.mkdir()
    entries = []
    for i in range(6):  # six wheels, one member each
        data = f"X = {i}\n".encode() * 300
        wheel = tmp_path / f"w{i}.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"m{i}.py", data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        (tree / f"m{i}.py").write_bytes(data)
        entries.append(Entry(f"m{i}.py", 0o644 << 16, str(tree / f"m{i}.py"), raw_member(wheel, f"m{i}.py")[0]))
    write_zip(str(tmp_path / "all.zip"), entries)
    monkeypatch.setattr(zipwriter._Archives, "KEPT_OPEN", 2)
    before = len(os.listdir("/proc/self/fd"))
    write_zip(str(tmp_path / "two.zip"), entries)
    assert len(os.listdir("/proc/self/fd")) == before
    assert (tmp_path / "two.zip").read_bytes() == (tmp_path / "all.zip").read_bytes()
    for i, entry in enumerate(entries):  # still the wheels' own deflated bytes, not compressed afresh
        assert raw_member(tmp_path / "two.zip", entry.name)[1] == raw_member(tmp_path / f"w{i}.whl", entry.name)[1]
    archives = zipwriter._Archives()
    for i in range(3):
        with archives.opened(str(tmp_path / f"w{i}.whl")) as fd:
            last = fd
    assert len(archives._fds) == 2 and last not in archives._fds.values()  # the third was opened for its read only
    with pytest.raises(OSError):
        os.fstat(last)
    archives.close()


def test_a_raw_source_that_is_not_what_it_claims_falls_back_to_compressing(tmp_path):
    (tmp_path / "a.py").write_bytes(b"A = 1\n" * 100)
    data = b"A = 1\n" * 100
    bogus = RawSource(str(tmp_path / "missing.whl"), 0, 10, zlib.crc32(data), len(data))
    dest = tmp_path / "z.zip"
    write_zip(str(dest), [Entry("a.py", 0o644 << 16, str(tmp_path / "a.py"), bogus)])
    with zipfile.ZipFile(dest) as archive:
        assert archive.read("a.py") == data


# --- the store, against the loopback index --------------------------------------------------------


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


def download_for(index, filename, data, package="demo-store"):
    sha = hashlib.sha256(data).hexdigest()
    return wheelstore.Download(package, IndexFile(filename, f"{index.url}/files/{filename}", sha), frozenset({sha}), index.simple_url)


def test_a_stored_wheel_is_not_downloaded_again(index, tmp_path):
    filename, data = index.add("demo-store", "1.0")
    download = download_for(index, filename, data)
    first = wheelstore.fetch(download, tmp_path / "store")
    second = wheelstore.fetch(download, tmp_path / "store")
    assert first == second and first.read_bytes() == data
    assert sum("/files/" in r for r in index.requests) == 1
    assert not list((tmp_path / "store").glob(".*.part"))


def test_pages_and_wheels_fetched_from_different_threads_share_one_kept_connection(index, tmp_path):
    """One HTTP session per process: a project page and two wheels, each fetched on its own thread one
    after another, travel over one kept-alive connection (a requests.get() per call opens three)."""
    wheels = [index.add("demo-reuse", version) for version in ("1.0", "2.0")]
    results = []
    jobs = [lambda: results.append(project_listing("demo-reuse", index.simple_url))]
    jobs += [lambda f=f, d=d: results.append(wheelstore.fetch(download_for(index, f, d, "demo-reuse"), tmp_path / "store"))
             for f, d in wheels]  # fmt: skip
    for job in jobs:
        thread = threading.Thread(target=job)
        thread.start()
        thread.join(timeout=30)
    assert sorted(f.filename for f in results[0]) == sorted(f for f, _ in wheels)
    assert [path.read_bytes() for path in results[1:]] == [d for _, d in wheels]
    assert len(index.requests) == 3 and index.connections == 1


def test_a_truncated_download_is_retried_boundedly_then_named(index, tmp_path, monkeypatch):
    monkeypatch.setenv("UV_HTTP_RETRIES", "1")
    filename, data = index.add("demo-cut", "1.0", files={"demo_cut/__init__.py": b"x" * 200_000})
    plan = index.fault(FaultPlan(TRUNCATE, match="/files/"))
    with pytest.raises(ResolveError) as caught:
        wheelstore.fetch(download_for(index, filename, data, "demo-cut"), tmp_path / "store")
    message = str(caught.value)
    assert message.startswith(f"cannot download {filename} for demo-cut from {index.url}/files/")
    assert "retried 1 times" in message
    assert plan.injected == 2
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]  # nothing partial kept


def test_bytes_that_do_not_match_the_lock_are_refused_and_not_stored(index, tmp_path):
    filename, data = index.add("demo-evil", "1.0")
    index.served[filename] = make_wheel("demo-evil", "1.0", files={"demo_evil/__init__.py": b"import os\n"})[1]
    with pytest.raises(ResolveError, match=r"^hash mismatch for demo-evil: the file downloaded from http://127\.0\.0\.1"):
        wheelstore.fetch(download_for(index, filename, data, "demo-evil"), tmp_path / "store")
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def deflated_copy(wheel: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(wheel)) as source, zipfile.ZipFile(buffer, "w") as dest:
        for info in source.infolist():
            dest.writestr(info.filename, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def test_a_build_copies_wheel_members_into_the_layer_and_reuses_the_store(index, invoke, write_recipe, tmp_path):
    body = b"VALUE = 42\n" + b"# padding line for the deflate stream\n" * 200
    filename, stored = index.add("demo-raw", "1.0", files={"demo_raw/__init__.py": body})
    data = deflated_copy(stored)  # make_wheel stores its members; real wheels deflate them
    index.projects["demo-raw"][filename] = data
    recipe = write_recipe(f"name: rawcopy\npackages: [demo-raw]\nindex_url: {index.simple_url}\nbytecode: none\n")
    assert invoke("lock", recipe).exit_code == 0  # with a committed lock a build asks uv nothing: requests below are ours
    out = tmp_path / "dist"
    result = invoke("build", recipe, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.stderr
    layer = out / "rawcopy-python3.12-x86_64.zip"
    wheel = tmp_path / filename
    wheel.write_bytes(data)
    assert raw_member(layer, "python/demo_raw/__init__.py")[1] == raw_member(wheel, "demo_raw/__init__.py")[1]
    with zipfile.ZipFile(layer) as archive:
        assert archive.read("python/demo_raw/__init__.py") == body
        assert archive.read("python/demo_raw-1.0.dist-info/INSTALLER") == b"layerbuild\n"
    downloads = sum("/files/" in r for r in index.requests)

    again = invoke("build", recipe, "--out", tmp_path / "dist2", "--no-cache")
    assert again.exit_code == 0, again.stderr
    assert sum("/files/" in r for r in index.requests) == downloads, index.requests  # served from the store
    assert (tmp_path / "dist2" / layer.name).read_bytes() == layer.read_bytes()


def test_a_wheel_only_the_extra_index_has_is_fetched_from_it(invoke, write_recipe, tmp_path):
    with PackageIndex() as primary, PackageIndex() as extra:
        primary.add("other-project", "1.0")
        filename, _ = extra.add("demo-extra", "2.0")
        recipe = write_recipe(f"name: extra\npackages: [demo-extra]\nindex_url: {primary.simple_url}\n"
                              f"extra_index_urls: [{extra.simple_url}]\nbytecode: none\n")  # fmt: skip
        out = tmp_path / "dist"
        result = invoke("build", recipe, "--out", out, "--no-cache")
        assert result.exit_code == 0, result.stderr
        with zipfile.ZipFile(out / "extra-python3.12-x86_64.zip") as archive:
            assert "python/demo_extra/__init__.py" in archive.namelist()
            assert archive.read("python/demo_extra-2.0.dist-info/INSTALLER") == b"layerbuild\n"  # our install, not uv's
        assert f"GET /files/{filename}" in extra.requests
        assert "GET /simple/demo-extra/" in primary.requests  # asked first, and it has no such project
