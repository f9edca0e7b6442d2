import os
import stat
import zipfile
from pathlib import Path

import pytest

from layerbuild.util.records import drop_removed_files
from layerbuild.util.tree import (
    FIXED_DATE_TIME,
    glob_regex,
    remove_paths,
    walk_tree,
    write_deterministic_zip,
)


@pytest.mark.parametrize("pattern,path,expected", [
    ("tests", "python/numpy/tests/test_a.py", True),
    ("tests", "python/numpy/testsuite/a.py", False),
    ("*.pyi", "python/numpy/__init__.pyi", True),
    ("python/*/tests/**", "python/numpy/tests/x/y.py", True),
    ("python/*/tests/**", "python/numpy/core/tests/y.py", False),
    ("python/**/tests", "python/numpy/core/tests/y.py", True),
    ("python/numpy", "python/numpy/__init__.py", True),
    ("python/numpy", "python/numpy.libs/x.so", False),
    ("?.txt", "python/a.txt", True),
])
def test_glob(pattern, path, expected):
    assert bool(glob_regex(pattern).match(path)) is expected


def test_walk_tree_lists_what_pathlib_would_say_of_each_entry(tmp_path):
    """walk_tree reads kinds from the directory listing; they must be what Path.is_dir/is_file/is_symlink
    say (symlinks followed), with symlinked directories listed but not entered, as os.walk does."""
    make_tree(tmp_path)
    pkg = tmp_path / "python" / "pkg"
    (pkg / "linked_dir").symlink_to(pkg / "tests", target_is_directory=True)
    (pkg / "linked_file.py").symlink_to(pkg / "__init__.py")
    (pkg / "dangling").symlink_to(tmp_path / "nowhere")
    (pkg / "loop").symlink_to(pkg / "loop")
    (pkg / "deep" / "er").mkdir(parents=True)
    (pkg / "deep" / "er" / "m.py").write_text("")
    expected = []
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(tmp_path).as_posix()
            expected.append((rel, str(full), full.is_dir(), full.is_file(), full.is_symlink()))
    entries = walk_tree(tmp_path)
    assert [tuple(e) for e in entries] == sorted(expected)
    by_rel = {e.rel: e for e in entries}
    assert by_rel["python/pkg/linked_dir"].is_dir and "python/pkg/linked_dir/test_x.py" not in by_rel
    assert not by_rel["python/pkg/dangling"].is_file and not by_rel["python/pkg/loop"].is_dir
    assert by_rel["python/pkg/deep/er/m.py"].name == "m.py"
    assert walk_tree(tmp_path / "missing") == []


def make_tree(root):
    (root / "python" / "pkg" / "tests").mkdir(parents=True)
    (root / "python" / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "python" / "pkg" / "tests" / "test_x.py").write_text("")
    (root / "python" / "pkg-1.0.dist-info").mkdir()
    (root / "python" / "pkg-1.0.dist-info" / "RECORD").write_text(
        "pkg/__init__.py,sha256=a,6\npkg/tests/test_x.py,sha256=b,0\n../../bin/tool,sha256=c,1\npkg-1.0.dist-info/RECORD,,\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o700)


def test_remove_paths_and_drop_removed_files(tmp_path):
    make_tree(tmp_path)
    removed = remove_paths(tmp_path, ["tests"])
    assert removed == ["python/pkg/tests/test_x.py"]
    assert not (tmp_path / "python/pkg/tests").exists()
    drop_removed_files(tmp_path / "python", {"pkg/tests/test_x.py"})
    record = (tmp_path / "python/pkg-1.0.dist-info/RECORD").read_text().splitlines()
    assert record == ["pkg/__init__.py,sha256=a,6", "pkg-1.0.dist-info/RECORD,,"]


def test_zip_is_deterministic_and_normalised(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        make_tree(root)
    os.utime(b / "python/pkg/__init__.py", (1_000_000, 1_000_000))
    os.chmod(b / "python/pkg/__init__.py", 0o600)
    za = write_deterministic_zip(a, tmp_path / "a.zip")
    zb = write_deterministic_zip(b, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert za.sha256 == zb.sha256 and za.file_count == 4
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        names = archive.namelist()
        assert [n.rstrip("/") for n in names] == sorted(n.rstrip("/") for n in names)
        for info in archive.infolist():
            assert info.date_time == FIXED_DATE_TIME
            mode = info.external_attr >> 16
            if info.is_dir():
                assert stat.S_IMODE(mode) == 0o755
            elif info.filename == "bin/tool":
                assert stat.S_IMODE(mode) == 0o755
            else:
                assert stat.S_IMODE(mode) == 0o644
    import base64
    import hashlib
    digest = hashlib.sha256((tmp_path / "a.zip").read_bytes()).digest()
    assert za.code_sha256 == base64.b64encode(digest).decode()


def test_small_entries_go_to_the_pool_in_groups_and_keep_their_order():
    from layerbuild.util.threadpool import in_batches
    from layerbuild.util.zipwriter import BATCH_BYTES, Entry, _batch_size, _Job

    def job(name, size, chunk=None):
        return _Job(Entry(name, 0, name), *(chunk or ()), file_size=size)

    small = [job(f"s{i}", BATCH_BYTES // 4) for i in range(6)]
    chunks = [job("big", 3 * BATCH_BYTES, (0, BATCH_BYTES, False)), job("big", 3 * BATCH_BYTES, (BATCH_BYTES, BATCH_BYTES, True))]
    whole_large = job("large", BATCH_BYTES + 1)
    jobs = small[:5] + chunks + [whole_large] + small[5:]
    batches = in_batches(jobs, _batch_size, BATCH_BYTES)
    assert [j for batch in batches for j in batch] == jobs  # results come back in entry order
    assert [len(b) for b in batches] == [4, 1, 1, 1, 1, 1]
    assert all(sum(j.file_size for j in b) <= BATCH_BYTES for b in batches if len(b) > 1)


def test_parallel_writer_output_is_a_valid_zip_equal_to_zipfiles(tmp_path):
    import shutil
    import subprocess

    from layerbuild.util.tree import _write_with_zipfile
    from layerbuild.util.zipwriter import Entry, write_zip

    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root)
    (root / "python" / "pkg" / "données.txt").write_text("é" * 5000)  # non-ASCII name: UTF-8 flag
    (root / "python" / "pkg" / "random.bin").write_bytes(os.urandom(70_000))  # incompressible: stored
    # Larger than a chunk: deflated in parallel chunks that must join into one valid stream (and one CRC).
    from layerbuild.util.zipwriter import CHUNK
    words = b" ".join(b"symbol_%d" % (i % 5000) for i in range(CHUNK // 3))
    (root / "python" / "pkg" / "big.so").write_bytes(words[: 2 * CHUNK + 12345])
    (root / "python" / "pkg" / "bigrandom.bin").write_bytes(os.urandom(CHUNK + 1))  # chunked, then stored
    summary = write_deterministic_zip(root, tmp_path / "fast.zip")
    with zipfile.ZipFile(tmp_path / "fast.zip") as archive:
        assert archive.testzip() is None
        fast = {i.filename: (archive.read(i), i.external_attr, i.date_time) for i in archive.infolist()}
        methods = {i.filename: i.compress_type for i in archive.infolist()}
    assert methods["python/pkg/random.bin"] == zipfile.ZIP_STORED
    assert methods["python/pkg/données.txt"] == zipfile.ZIP_DEFLATED
    assert methods["python/pkg/big.so"] == zipfile.ZIP_DEFLATED and methods["python/pkg/bigrandom.bin"] == zipfile.ZIP_STORED
    assert fast["python/pkg/big.so"][0] == (root / "python" / "pkg" / "big.so").read_bytes()
    # The zipfile fallback (used past plain-zip limits) holds exactly the same entries.
    from layerbuild.util.tree import (
        DIR_MODE,
        EXEC_MODE,
        FILE_MODE,
        _external_attr,
        walk_tree,
    )
    slow_entries = [Entry(e.rel + "/", _external_attr(DIR_MODE, True), None) if e.is_dir else
                    Entry(e.rel, _external_attr(EXEC_MODE if os.stat(e.path).st_mode & 0o100 else FILE_MODE, False), e.path)
                    for e in walk_tree(root)]
    assert _write_with_zipfile(slow_entries, tmp_path / "slow.zip") == summary.unzipped_bytes
    with zipfile.ZipFile(tmp_path / "slow.zip") as archive:
        slow = {i.filename: (archive.read(i), i.external_attr, i.date_time) for i in archive.infolist()}
    assert fast == slow
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-tq", str(tmp_path / "fast.zip")], capture_output=True).returncode == 0
    # Same bytes whatever the number of threads.
    write_zip(str(tmp_path / "one.zip"), slow_entries, threads=1)
    write_zip(str(tmp_path / "four.zip"), slow_entries, threads=4)
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "four.zip").read_bytes() == (tmp_path / "fast.zip").read_bytes()
