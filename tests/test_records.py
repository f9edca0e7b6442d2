"""util/records: every RECORD edit (install-time CSV rewrite, line edits in the layer tree) and its one hash."""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path

import pytest

from layerbuild.util import records
from layerbuild.util.records import (
    BadRecord,
    add_compiled,
    drop_removed,
    entry_line,
    installed_rows,
    parse_lines,
    parse_rows,
    record_hash,
    record_paths,
    rehash,
    render_lines,
    render_rows,
    rewrite_installed,
)

INSTALLER = "pkg-1.0.dist-info/INSTALLER"


def place(path: str) -> str | None:
    """Where a member of pkg-1.0's wheel lands (the wheel installer's rule, for these tests)."""
    if path.startswith("pkg-1.0.data/purelib/"):
        return path[len("pkg-1.0.data/purelib/") :]
    if path.startswith("pkg-1.0.data/headers/"):
        return None
    return path


def site_with(tmp_path: Path, record: str, files: dict[str, bytes] | None = None) -> Path:
    site = tmp_path / "python"
    (site / "pkg-1.0.dist-info").mkdir(parents=True)
    (site / "pkg-1.0.dist-info" / "RECORD").write_bytes(record.encode())
    for path, data in (files or {}).items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
    return site


def read_record(site: Path) -> bytes:
    return (site / "pkg-1.0.dist-info" / "RECORD").read_bytes()


# --- hash and lines ---------------------------------------------------------------------------------------


def test_record_hash_is_sha256_in_urlsafe_base64_without_padding():
    data = b"\xfb\xff" * 100  # a digest with '-' or '_' in its base64 would differ from plain base64
    digest = hashlib.sha256(data).digest()
    assert record_hash(data) == "sha256=" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert "=" not in record_hash(data)[len("sha256=") :]
    assert record_hash(b"") == "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    assert entry_line("pkg/a.py", b"abc") == f"pkg/a.py,{record_hash(b'abc')},3"


def test_line_form_round_trips_and_reads_the_path_before_the_first_comma():
    text = 'pkg/a.py,sha256=x,1\n"pkg/b,c.py",sha256=y,2\n\npkg-1.0.dist-info/RECORD,,\n'
    assert render_lines(parse_lines(text)) == text
    assert record_paths(text) == ["pkg/a.py", '"pkg/b', "", "pkg-1.0.dist-info/RECORD"]
    assert render_lines([]) == "\n"


def test_csv_form_round_trips_with_quoting_and_newline_ends():
    text = 'pkg/a.py,sha256=x,1\n"pkg/b,c.py",sha256=y,2\n"pkg/""q"".py",,\n'
    rows = parse_rows(text)
    assert rows == [["pkg/a.py", "sha256=x", "1"], ["pkg/b,c.py", "sha256=y", "2"], ['pkg/"q".py', "", ""]]
    assert render_rows(rows) == text
    assert parse_rows("a,b,c\r\nd,e,f\r\n") == [["a", "b", "c"], ["d", "e", "f"]]
    assert render_rows(parse_rows("a,b,c\r\n")) == "a,b,c\n"


# --- install-time rewrite ----------------------------------------------------------------------------------


def test_installed_rows_move_drop_add_installer_and_sort():
    rows = [
        ["pkg/z.py", "sha256=z", "3"],
        ["pkg-1.0.data/purelib/pkg/moved.py", "sha256=m", "4"],
        ["pkg-1.0.data/headers/pkg.h", "sha256=h", "5"],
        [],
        ["", "x", "y"],
        [INSTALLER, "sha256=theirs", "3"],
        ["pkg-1.0.dist-info/RECORD", "", ""],
    ]
    assert installed_rows(rows, place, INSTALLER) == [
        [INSTALLER, "", ""],
        ["pkg-1.0.dist-info/RECORD", "", ""],
        ["pkg/moved.py", "sha256=m", "4"],
        ["pkg/z.py", "sha256=z", "3"],
    ]


def test_rewrite_installed_gives_csv_bytes():
    data = b'pkg/z.py,sha256=z,3\r\n"pkg/a,b.py",sha256=a,1\r\npkg-1.0.data/purelib/pkg/m.py,sha256=m,4\r\n'
    assert rewrite_installed(data, place, INSTALLER) == (
        INSTALLER.encode() + b',,\n"pkg/a,b.py",sha256=a,1\npkg/m.py,sha256=m,4\npkg/z.py,sha256=z,3\n'
    )
    assert rewrite_installed(b"", place, INSTALLER) == INSTALLER.encode() + b",,\n"


def test_a_record_that_is_not_utf8_is_one_line():
    with pytest.raises(BadRecord) as caught:
        rewrite_installed("pkg/caf\xe9.py,,\n".encode("latin-1"), place, INSTALLER)
    assert str(caught.value) == "RECORD is not UTF-8 (byte 7), as the wheel spec requires"


def test_a_record_that_is_not_csv_is_one_line():
    huge = b'"' + b"x" * (csv.field_size_limit() + 10) + b'",,\n'
    with pytest.raises(BadRecord) as caught:
        rewrite_installed(huge, place, INSTALLER)
    assert str(caught.value) == f"RECORD is not valid CSV (field larger than field limit ({csv.field_size_limit()}))"
    assert "\n" not in str(caught.value)


# --- line edits --------------------------------------------------------------------------------------------


def test_drop_removed_keeps_other_lines_as_they_are():
    lines = [
        "pkg/a.py,sha256=a,1",
        "pkg/tests/t.py,sha256=t,2",
        "../../bin/tool,sha256=c,1",
        '"pkg/q,1.py" , sha256=q,3',
        "",
        "pkg-1.0.dist-info/RECORD,,",
    ]
    assert drop_removed(lines, {"pkg/tests/t.py"}) == [
        "pkg/a.py,sha256=a,1",
        '"pkg/q,1.py" , sha256=q,3',
        "",
        "pkg-1.0.dist-info/RECORD,,",
    ]
    assert drop_removed(lines, set()) == [line for line in lines if not line.startswith("../")]


def test_rehash_replaces_only_changed_lines_it_has_an_entry_for():
    lines = ["pkg/a.py,sha256=a,1", "pkg/_c.so,sha256=old,100", "pkg/gone.so,sha256=g,9"]
    entries = {"pkg/_c.so": "pkg/_c.so,sha256=new,50"}
    assert rehash(lines, {"pkg/_c.so", "pkg/gone.so"}, entries.get) == [
        "pkg/a.py,sha256=a,1",
        "pkg/_c.so,sha256=new,50",
        "pkg/gone.so,sha256=g,9",
    ]
    assert rehash(lines, set(), entries.get) == lines


def test_add_compiled_alongside_appends_sorted_entries_once():
    lines = [
        "pkg/b.py,sha256=b,2",
        "pkg/a.py,sha256=a,1",
        "pkg/__pycache__/c.cpython-312.pyc,,",
        "pkg/c.py,sha256=c,3",
        "pkg-1.0.dist-info/RECORD,,",
    ]
    compiled = {
        "pkg/a.py": "pkg/__pycache__/a.cpython-312.pyc",
        "pkg/b.py": "pkg/__pycache__/b.cpython-312.pyc",
        "pkg/c.py": "pkg/__pycache__/c.cpython-312.pyc",
        "other/d.py": "other/__pycache__/d.cpython-312.pyc",
    }
    asked = []

    def entry_for(pyc: str) -> str:
        asked.append(pyc)
        return f"{pyc},sha256=h,7"

    assert add_compiled(lines, compiled, entry_for, replace_source=False) == lines + [
        "pkg/__pycache__/a.cpython-312.pyc,sha256=h,7",
        "pkg/__pycache__/b.cpython-312.pyc,sha256=h,7",
    ]
    assert sorted(asked) == ["pkg/__pycache__/a.cpython-312.pyc", "pkg/__pycache__/b.cpython-312.pyc"]


def test_add_compiled_sourceless_puts_the_pyc_in_the_source_line_place():
    lines = ["pkg/b.py,sha256=b,2", "pkg/a.py,sha256=a,1", "pkg/data.txt,sha256=d,4"]
    compiled = {"pkg/a.py": "pkg/a.pyc", "pkg/b.py": "pkg/b.pyc"}
    assert add_compiled(lines, compiled, lambda pyc: f"{pyc},sha256=h,7", replace_source=True) == [
        "pkg/b.pyc,sha256=h,7",
        "pkg/a.pyc,sha256=h,7",
        "pkg/data.txt,sha256=d,4",
    ]
    assert add_compiled(lines, {}, lambda pyc: "", replace_source=True) == lines


# --- the RECORDs of a site directory -------------------------------------------------------------------------


def test_drop_removed_files_rewrites_with_newline_ends(tmp_path):
    site = site_with(tmp_path, "pkg/a.py,sha256=a,1\r\npkg/t.py,sha256=t,2\r\npkg-1.0.dist-info/RECORD,,")
    records.drop_removed_files(site, {"pkg/t.py"})
    assert read_record(site) == b"pkg/a.py,sha256=a,1\npkg-1.0.dist-info/RECORD,,\n"


def test_an_unchanged_record_is_not_written_again(tmp_path):
    text = "pkg/a.py,sha256=a,1\r\npkg-1.0.dist-info/RECORD,,"  # CRLF, no final newline: left as is
    site = site_with(tmp_path, text, {"pkg/a.py": b"x"})
    records.drop_removed_files(site, {"pkg/elsewhere.py"})
    records.rehash_files(site, {"pkg/missing.so"})
    records.list_compiled(site, [("pkg/other.py", "pkg/other.pyc")], replace_source=True)
    assert read_record(site) == text.encode()


def test_rehash_files_gives_new_hash_and_size(tmp_path):
    site = site_with(tmp_path, "pkg/_c.so,sha256=old,100\npkg/a.py,sha256=a,1\n", {"pkg/_c.so": b"stripped"})
    records.rehash_files(site, {"pkg/_c.so"})
    assert read_record(site).decode() == f"pkg/_c.so,{record_hash(b'stripped')},8\npkg/a.py,sha256=a,1\n"


def test_rehash_files_with_nothing_changed_does_not_read_records(tmp_path):
    site = site_with(tmp_path, "")
    (site / "pkg-1.0.dist-info" / "RECORD").write_bytes(b"caf\xe9,,\n")  # would not decode
    records.rehash_files(site, set())
    with pytest.raises(UnicodeDecodeError):
        records.rehash_files(site, {"pkg/a.py"})


def test_list_compiled_adds_pyc_entries_hashed_from_disk(tmp_path):
    site = site_with(
        tmp_path,
        "pkg/a.py,sha256=a,1\npkg-1.0.dist-info/RECORD,,\n",
        {"pkg/a.py": b"x = 1\n", "pkg/__pycache__/a.cpython-312.pyc": b"PYC"},
    )
    records.list_compiled(site, [("pkg/a.py", "pkg/__pycache__/a.cpython-312.pyc")], replace_source=False)
    assert read_record(site).decode() == (
        f"pkg/a.py,sha256=a,1\npkg-1.0.dist-info/RECORD,,\npkg/__pycache__/a.cpython-312.pyc,{record_hash(b'PYC')},3\n"
    )


def test_every_record_below_site_is_edited(tmp_path):
    site = site_with(tmp_path, "pkg/t.py,,\npkg/a.py,,\n")
    (site / "other-2.0.dist-info").mkdir()
    (site / "other-2.0.dist-info" / "RECORD").write_text("other/t.py,,\npkg/t.py,,\n")
    records.drop_removed_files(site, {"pkg/t.py"})
    assert read_record(site) == b"pkg/a.py,,\n"
    assert (site / "other-2.0.dist-info" / "RECORD").read_bytes() == b"other/t.py,,\n"
