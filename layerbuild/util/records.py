"""Every read and edit of a distribution's RECORD (`*.dist-info/RECORD`, the wheel spec's list of its files).

A RECORD line is `path,sha256=<urlsafe base64, no padding>,size`, paths relative to site-packages.
Two forms, each kept exactly as layers have always been built:

- At install, a wheel's RECORD is parsed as CSV (it must be UTF-8), its rows moved to where the files
  land, sorted by path and written back as CSV with '\\n' line ends (`rewrite_installed`).
- In the layer tree, later edits (files excluded or slimmed away, stripped ELF files, compiled .pyc) work
  line by line: a line's path is the text before its first comma, lines not edited keep their bytes,
  and a RECORD is only written again when a line changed (`drop_removed_files`, `rehash_files`,
  `list_compiled`), as '\\n'-joined lines with a final '\\n'.

The edits themselves are pure functions over lines (`drop_removed`, `rehash`, `add_compiled`); the
`*_files` functions apply one to every RECORD below a site directory, in sorted order.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

RECORD_GLOB = "*.dist-info/RECORD"


class BadRecord(Exception):
    """A RECORD that cannot be read (not UTF-8, not CSV); the message is one line naming why."""


# --- hashes and lines -----------------------------------------------------------------------------------


def record_hash(data: bytes) -> str:
    """The hash field of a RECORD line: `sha256=` and the digest in urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def entry_line(path: str, data: bytes) -> str:
    """The RECORD line of a file at path (relative to site-packages) holding data."""
    return f"{path},{record_hash(data)},{len(data)}"


def file_entry(site: Path, path: str) -> str:
    """The RECORD line of site/path as it is on disk now."""
    return entry_line(path, (site / path).read_bytes())


def record_path(line: str) -> str:
    """The path a RECORD line names, as the line edits read it: the text before its first comma."""
    return line.split(",", 1)[0]


def record_paths(text: str) -> list[str]:
    """The path of every line of a RECORD's text (empty lines give '')."""
    return [record_path(line) for line in text.splitlines()]


def parse_lines(text: str) -> list[str]:
    return text.splitlines()


def render_lines(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"


def parse_rows(text: str) -> list[list[str]]:
    """A RECORD's text as CSV rows (csv.Error for text that is not CSV)."""
    return list(csv.reader(io.StringIO(text)))


def render_rows(rows: Iterable[list[str]]) -> str:
    """Rows as RECORD text: CSV, '\\n' line ends."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


# --- pure edits -------------------------------------------------------------------------------------------


def installed_rows(rows: Iterable[list[str]], place: Callable[[str], str | None], installer: str) -> list[list[str]]:
    """Rows of an installed wheel: each at place(path) (None: not installed, dropped), empty rows and any
    INSTALLER row of the wheel's own dropped, our `installer` row added; sorted by path (stable)."""
    moved = []
    for row in rows:
        if not row or not row[0]:
            continue
        path = place(row[0])
        if path is None or path == installer:
            continue
        moved.append([path, *row[1:]])
    moved.append([installer, "", ""])
    moved.sort(key=lambda row: row[0])
    return moved


def rewrite_installed(data: bytes, place: Callable[[str], str | None], installer: str) -> bytes:
    """A wheel's RECORD bytes as installed (installed_rows), or BadRecord when they are not UTF-8 or not CSV."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"RECORD is not UTF-8 (byte {exc.start}), as the wheel spec requires") from None
    try:
        return render_rows(installed_rows(parse_rows(text), place, installer)).encode("utf-8")
    except (csv.Error, UnicodeEncodeError) as exc:  # a field over csv's size limit, a lone surrogate...
        raise BadRecord(f"RECORD is not valid CSV ({exc})") from None


def drop_removed(lines: list[str], removed: Collection[str]) -> list[str]:
    """Lines without those naming a removed path or one outside site-packages ('../', e.g. scripts)."""
    return [line for line in lines if not ((path := record_path(line)) in removed or path.startswith("../"))]


def rehash(lines: list[str], changed: Collection[str], entry_for: Callable[[str], str | None]) -> list[str]:
    """Lines naming a changed path replaced by entry_for(path) (None: the line stays as it is)."""
    new = []
    for line in lines:
        path = record_path(line)
        if path in changed:
            line = entry_for(path) or line
        new.append(line)
    return new


def add_compiled(
    lines: list[str], compiled: Mapping[str, str], entry_for: Callable[[str], str], replace_source: bool
) -> list[str]:
    """Lines listing compiled files, as pip does: for each line naming a source in compiled (source -> .pyc
    path) whose .pyc is not listed yet, entry_for(pyc) is added; at the end, sorted (alongside the source),
    or in the source's place (replace_source: the .pyc replaced the .py)."""
    listed = {record_path(line) for line in lines}
    kept, added = [], []
    for line in lines:
        pyc = compiled.get(record_path(line))
        if pyc and pyc not in listed:
            entry = entry_for(pyc)
            if replace_source:
                kept.append(entry)
                continue
            added.append(entry)
        kept.append(line)
    return kept + sorted(added)


# --- the RECORDs of a site directory ------------------------------------------------------------------------


def edit_records(site: Path, edit: Callable[[list[str]], list[str]]) -> None:
    """Apply edit to the lines of every RECORD below site (sorted); write back only those it changed."""
    for record in sorted(site.glob(RECORD_GLOB)):
        lines = parse_lines(record.read_text(encoding="utf-8"))
        new = edit(lines)
        if new != lines:
            record.write_text(render_lines(new), encoding="utf-8")


def drop_removed_files(site: Path, removed: Collection[str]) -> None:
    """Drop RECORD lines naming files no longer in site (`removed`, relative to site) and those outside it
    ('../': files installed elsewhere, e.g. scripts, never ship in a layer)."""
    edit_records(site, lambda lines: drop_removed(lines, removed))


def rehash_files(site: Path, changed: Collection[str]) -> None:
    """Give rewritten files (paths relative to site, e.g. stripped ELF) their new hash and size in RECORD."""
    if not changed:
        return

    def entry_for(path: str) -> str | None:
        return file_entry(site, path) if (site / path).is_file() else None

    edit_records(site, lambda lines: rehash(lines, changed, entry_for))


def list_compiled(site: Path, pairs: Iterable[tuple[str, str]], replace_source: bool) -> None:
    """List compiled files ((source, pyc) paths relative to site) in their distribution's RECORD (add_compiled)."""
    compiled = dict(pairs)
    edit_records(site, lambda lines: add_compiled(lines, compiled, lambda pyc: file_entry(site, pyc), replace_source))
