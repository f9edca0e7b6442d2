"""Reading untrusted layer zips safely.

Zips handed to audit, stack, test and invoke may come from anywhere. Before anything is read or
extracted, every entry is checked: no absolute paths or '..' parts, no symlinks that point
outside the layer, no duplicate names, and caps on total uncompressed size, entry count and
compression ratio (zip bombs). Extraction only ever writes below a directory the caller owns.
"""

from __future__ import annotations

import lzma
import os
import stat
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from layerbuild.errors import LayerbuildError
from layerbuild.limits import UNZIPPED_LIMIT

# Lambda's own limit for function plus layers, unzipped, plus headroom for reporting oversize layers.
MAX_TOTAL_BYTES = 2 * UNZIPPED_LIMIT
MAX_ENTRIES = 200_000
# What zipfile raises on damaged or exotic data (bad CRC, bad deflate stream, unsupported flags...).
CORRUPT_DATA_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
                       ValueError)  # fmt: skip
# Deflate tops out near 1032:1; real layers sit well below 100:1. A larger ratio on a big entry is a bomb.
MAX_RATIO = 200
# Small files may compress absurdly well: real shared libraries carry megabytes of zero padding
# between segments (pillow's 2 MB libXau compresses 223:1). The total cap bounds those; the ratio
# cap is for the single giant entry.
RATIO_MIN_BYTES = 8 << 20


class UnsafeZipError(LayerbuildError):
    """The zip is not a layer we are willing to read."""


@dataclass(frozen=True)
class ZipEntry:
    name: str  # normalised posix path, no trailing slash
    is_dir: bool
    is_symlink: bool
    file_size: int
    compress_size: int
    mode: int
    link_target: str | None = None


@dataclass
class LayerZip:
    path: Path
    entries: list[ZipEntry]

    @property
    def files(self) -> list[ZipEntry]:
        return [e for e in self.entries if not e.is_dir]

    @property
    def unzipped_bytes(self) -> int:
        return sum(e.file_size for e in self.entries if not e.is_dir)

    @property
    def zipped_bytes(self) -> int:
        return self.path.stat().st_size

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of one (already checked) regular entry (at most limit bytes)."""
        with self.reader() as read:
            return read(name, limit)

    @contextmanager
    def reader(self):
        """A read(name, limit=None) function over one open archive: for reading many entries."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                yield lambda name, limit=None: _read_entry(self, archive, name, limit)
        except zipfile.BadZipFile as exc:
            raise UnsafeZipError(f"{self.path}: corrupt archive: {exc}") from None
        except OSError as exc:
            raise UnsafeZipError(f"{self.path}: cannot read: {exc}") from None

    def extract_to(self, dest: Path) -> Path:
        """Extract every checked entry below dest (which must exist and be ours)."""
        return extract(self, dest)


def relative_member(name: str, where: str, error: type[Exception] | None = None, noun: str = "entry",
                    relative: str = "layer entries must be relative (python/..., lib/...)", inside: str = "the layer") -> str:  # fmt: skip
    """A zip member's name as a normalised relative posix path; error(one line) for a NUL byte, an
    absolute path or a '..' part, anything that could write outside the directory it is unpacked in."""
    error = error or UnsafeZipError
    if "\x00" in name:
        raise error(f"{where}: {noun} {name!r} has a NUL byte in its name")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise error(f"{where}: {noun} {name!r} is an absolute path; {relative}")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise error(f"{where}: {noun} {name!r} climbs out of {inside} with '..'")
    return "/".join(parts)


def _normalise(name: str, zip_path: Path) -> str:
    return relative_member(name, str(zip_path))


def _check_link(name: str, target: str, zip_path: Path) -> None:
    if target.startswith("/"):
        raise UnsafeZipError(f"{zip_path}: symlink {name!r} points outside the layer (absolute target {target!r})")
    depth = len(PurePosixPath(name).parts) - 1
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise UnsafeZipError(f"{zip_path}: symlink {name!r} points outside the layer ({target!r})")


def open_layer_zip(path, max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: int = MAX_RATIO,
                   max_entries: int = MAX_ENTRIES) -> LayerZip:  # fmt: skip
    """Open and vet an untrusted zip; raise UnsafeZipError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise UnsafeZipError(f"{path}: no such file")
    try:
        archive = zipfile.ZipFile(path)
    except CORRUPT_DATA_ERRORS as exc:
        raise UnsafeZipError(f"{path}: not a zip archive ({exc}); is the file truncated?") from None
    except OSError as exc:
        raise UnsafeZipError(f"{path}: cannot read: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise UnsafeZipError(f"{path}: {len(infos):,} entries is more than the {max_entries:,} allowed")
        entries, seen, total = [], set(), 0
        for info in infos:
            # zipfile cuts names at a NUL (orig_filename keeps it); other unzippers may not: refuse.
            name = _normalise(getattr(info, "orig_filename", info.filename), path)
            if not name:
                continue
            mode = (info.external_attr >> 16) & 0xFFFF
            is_link = info.create_system == 3 and stat.S_ISLNK(mode)
            is_dir = info.is_dir() and not is_link
            key = name.rstrip("/")
            if key in seen:
                raise UnsafeZipError(f"{path}: entry {key!r} appears twice; which copy wins is undefined")
            seen.add(key)
            # Refused up front so that no later read meets zipfile's RuntimeError/NotImplementedError.
            if info.flag_bits & 0x61:  # traditional/strong encryption, patched data
                raise UnsafeZipError(f"{path}: entry {key!r} is encrypted or patched; a layer's entries never are")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                raise UnsafeZipError(f"{path}: entry {key!r} uses unknown compression method {info.compress_type} (corrupt header?)")
            total += info.file_size
            if total > max_total_bytes:
                raise UnsafeZipError(f"{path}: unzips to more than {max_total_bytes:,} bytes (zip bomb or far over Lambda's {UNZIPPED_LIMIT:,}-byte limit)")
            if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                raise UnsafeZipError(f"{path}: entry {key!r} expands {info.file_size // max(info.compress_size, 1)}:1 (zip bomb; the cap is {max_ratio}:1)")
            target = None
            if is_link:
                if info.file_size > 4096:
                    raise UnsafeZipError(f"{path}: symlink {key!r} has an implausible {info.file_size}-byte target")
                try:
                    target = archive.read(info).decode("utf-8", "replace")
                except (*CORRUPT_DATA_ERRORS, OSError) as exc:  # OSError: a header offset before the file's start
                    raise UnsafeZipError(f"{path}: symlink {key!r} is corrupt: {' '.join(str(exc).split())}") from None
                _check_link(key, target, path)
            entries.append(ZipEntry(key, is_dir, is_link, info.file_size, info.compress_size, mode, target))
    _check_link_chains({e.name: e.link_target for e in entries if e.is_symlink}, path)
    return LayerZip(path, entries)


MAX_LINK_HOPS = 40  # as Linux's path walk


def _check_link_chains(links: dict[str, str], zip_path: Path) -> None:
    """Walk every link as the kernel would once extracted (following the other links): each link
    passes _check_link alone, but b -> ../.. plus a -> b/../x still points above the layer."""
    for name in links:
        pending, resolved, hops = list(PurePosixPath(name).parts), [], 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise UnsafeZipError(f"{zip_path}: symlink {name!r} resolves outside the layer through other links")
                resolved.pop()
                continue
            candidate = "/".join(resolved + [part])
            if candidate in links:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise UnsafeZipError(f"{zip_path}: symlink {name!r} is a loop (more than {MAX_LINK_HOPS} links deep)")
                pending = list(PurePosixPath(links[candidate]).parts) + pending  # relative to the link's folder
                continue
            resolved.append(part)


def extract(layer: LayerZip, dest: Path) -> Path:
    """Extract a vetted zip below dest; symlinks inside the layer become copies' links, checked again."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zipfile.ZipFile(layer.path) as archive:
            for entry in layer.entries:
                out = (dest / entry.name).resolve()
                if out != dest and dest not in out.parents:
                    raise UnsafeZipError(f"{layer.path}: entry {entry.name!r} would be written outside the extraction directory")
                if entry.is_dir:
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if entry.is_symlink:
                    os.symlink(entry.link_target, out)
                    continue
                with archive.open(entry.name if entry.name in archive.NameToInfo else _original_name(archive, entry.name)) as src, open(out, "wb") as dst:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        written += len(block)
                        if written > MAX_TOTAL_BYTES:
                            raise UnsafeZipError(f"{layer.path}: expands beyond its declared sizes (zip bomb)")
                        dst.write(block)
                os.chmod(out, 0o755 if entry.mode & 0o111 else 0o644)
        # Each link was checked on paper; chained links (b -> ../.., a -> b/../x) can still land
        # outside once they exist on disk, so check where every one really resolves.
        for entry in layer.entries:
            if entry.is_symlink:
                real = (dest / entry.name).resolve()
                if real != dest and dest not in real.parents:
                    (dest / entry.name).unlink()
                    raise UnsafeZipError(f"{layer.path}: symlink {entry.name!r} resolves outside the layer through other links")
    except EOFError:
        raise UnsafeZipError(f"{layer.path}: truncated archive") from None
    except CORRUPT_DATA_ERRORS as exc:
        raise UnsafeZipError(f"{layer.path}: corrupt archive: {' '.join(str(exc).split())}") from None
    except OSError as exc:  # e.g. a link and a directory fighting over one path
        raise UnsafeZipError(f"{layer.path}: cannot extract: {' '.join(str(exc).split())}") from None
    return dest


def _read_entry(layer: LayerZip, archive: zipfile.ZipFile, name: str, limit: int | None) -> bytes:
    """Read a vetted entry by its normalised name, never more than the size it declared (a lying
    header must not turn a small read into a bomb)."""
    info = archive.NameToInfo.get(name) or archive.getinfo(_original_name(archive, name))
    wanted = info.file_size if limit is None else min(limit, info.file_size)
    try:
        with archive.open(info) as handle:
            data = handle.read(wanted + 1 if limit is None else wanted)
    except CORRUPT_DATA_ERRORS as exc:
        raise UnsafeZipError(f"{layer.path}: entry {name!r} is corrupt: {' '.join(str(exc).split())}") from None
    if len(data) > wanted:
        raise UnsafeZipError(f"{layer.path}: entry {name!r} expands beyond its declared {info.file_size:,} bytes (zip bomb)")
    return data


def _original_name(archive: zipfile.ZipFile, normalised: str) -> str:
    for info in archive.infolist():
        if _normalise(info.filename, Path(archive.filename or "")).rstrip("/") == normalised:
            return info.filename
    raise UnsafeZipError(f"{archive.filename}: entry {normalised!r} vanished")
