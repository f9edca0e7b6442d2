"""Installing locked wheels into a layer's python/ directory, as `pip install --target` would.

A wheel install into a target directory is an unzip with a few rules (the wheel spec, PEP 427):
`NAME.data/purelib` and `platlib` go to the top, `data` too, `scripts` to bin/ (which the build
drops: no Lambda path searches it), `headers` nowhere; RECORD is rewritten for the moved files and
lists an INSTALLER file. Entry points are not turned into scripts for the same reason.

Doing it here rather than through uv keeps the wheel archives, whose members are already deflated:
every extracted file is reported as a RawSource so that the zip writer can copy those bytes.
Member names are checked before anything is written: no absolute paths, no '..', no duplicates.
"""

from __future__ import annotations

import mmap
import os
import shutil
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerbuild.errors import BuildError
from layerbuild.util.records import BadRecord, rewrite_installed
from layerbuild.util.safezip import (
    MAX_RATIO,
    MAX_TOTAL_BYTES,
    RATIO_MIN_BYTES,
    UNZIPPED_LIMIT,
    relative_member,
)
from layerbuild.util.threadpool import BATCH_BYTES, ThreadPool, in_batches
from layerbuild.util.zipwriter import RawSource, payload_start

INSTALLER = "layerbuild"
_SCHEMES_TO_TOP = ("purelib", "platlib", "data")
MAX_PARALLEL = 4
STREAM_ABOVE = 32 << 20  # members larger than this are copied in blocks
# What the wheels of one build may unpack to: safezip's ceiling, twice Lambda's limit for a layer unzipped
# (audit.UNZIPPED_LIMIT, 262,144,000 bytes), since slimming and stripping still shrink it before the audit.
MAX_UNPACKED_BYTES = MAX_TOTAL_BYTES


class UnsafeWheelError(BuildError):
    """A wheel that cannot be installed safely or is damaged."""


def safe_member(name: str, wheel: str) -> str:
    """The member's normalised relative path; an UnsafeWheelError for anything that could escape."""
    return relative_member(name, wheel, UnsafeWheelError, "member", "a wheel's members must be relative",
                           "the install directory")  # fmt: skip


def installed_path(member: str, data_dir: str) -> str | None:
    """Pure: where a wheel member lands below the target directory (None: not installed)."""
    if not member.startswith(data_dir + "/"):
        return member
    scheme, _, rest = member[len(data_dir) + 1:].partition("/")
    if not rest:
        return None
    if scheme in _SCHEMES_TO_TOP:
        return rest
    if scheme == "scripts":
        return f"bin/{rest}"
    return None  # headers, and schemes the spec does not define


def _dist_info_dir(names: list[str], wheel: str) -> str:
    found = sorted({n.split("/", 1)[0] for n in names if "/" in n and n.split("/", 1)[0].endswith(".dist-info")})
    if len(found) != 1:
        raise UnsafeWheelError(f"{wheel}: expected one .dist-info directory, found {len(found)}")
    return found[0]


def check_sizes(infos: list[zipfile.ZipInfo], wheel: str, ceiling: int = MAX_UNPACKED_BYTES, already: int = 0) -> int:
    """Pure: the bytes the members declare, plus already; UnsafeWheelError naming the member at which the
    total passes the ceiling, or a member that expands like a zip bomb (safezip's ratio rule)."""
    total = already
    for info in infos:
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeWheelError(f"{wheel}: member {info.orig_filename!r} expands {info.file_size // max(info.compress_size, 1):,}:1 "
                                   f"to {info.file_size:,} bytes (a zip bomb; the cap is {MAX_RATIO}:1); nothing was installed")  # fmt: skip
        total += info.file_size
        if total > ceiling:
            raise UnsafeWheelError(f"{wheel}: member {info.orig_filename!r} takes the wheels past {ceiling:,} bytes unpacked "
                                   f"(a layer may hold {UNZIPPED_LIMIT:,} bytes unzipped); nothing was installed")  # fmt: skip
    return total


class UnpackBudget:
    """What the wheels of one install may declare unpacked, in all, shared by the threads that unpack them at
    once (the pipeline unpacks each wheel as it arrives): each wheel reserves its declared bytes before it
    writes anything, so wheels unpacking side by side can never pass the ceiling together."""

    def __init__(self, ceiling: int = MAX_UNPACKED_BYTES) -> None:
        self.ceiling, self.used = ceiling, 0
        self._lock = threading.Lock()

    def reserve(self, infos: list[zipfile.ZipInfo], wheel: str) -> int:
        """The wheel's declared bytes, now counted; UnsafeWheelError (as check_sizes) when they do not fit."""
        with self._lock:
            total = check_sizes(infos, wheel, self.ceiling, already=self.used)
            declared, self.used = total - self.used, total
            return declared


class _TooLarge(Exception):
    """A member inflated past the size its header declares."""


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    dest: Path
    rewrite_record: bool


def _plan(archive: zipfile.ZipFile, wheel: Path, scratch: Path) -> tuple[list[_Member], dict[str, RawSource], Path]:
    """What to write where for one wheel (names checked first, nothing written yet)."""
    label = wheel.name
    infos = [i for i in archive.infolist() if not i.is_dir()]
    names = [safe_member(i.orig_filename, label) for i in infos]
    if len(set(names)) != len(names):
        raise UnsafeWheelError(f"{label}: a member appears twice; which copy wins is undefined")
    dist_info = _dist_info_dir(names, label)
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    members, raws = [], {}
    for info, name in zip(infos, names):
        path = installed_path(name, data_dir)
        if path is None:
            continue
        is_record = name == f"{dist_info}/RECORD"
        if not is_record and info.compress_type == zipfile.ZIP_DEFLATED:
            raws[path] = RawSource(str(wheel), info.header_offset, info.compress_size, info.CRC, info.file_size)
        members.append(_Member(info, scratch / path, is_record))
    return members, raws, scratch / dist_info


def _member_bytes(mapped, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes straight from the mapped archive: zipfile's per-member objects cost more than
    inflating most wheel members. Checked like zipfile does: local header, method, size and CRC."""
    found = payload_start(mapped, info.header_offset)
    if found is None:
        raise zipfile.BadZipFile("bad local file header")
    if info.flag_bits & 0x1:
        raise NotImplementedError("encrypted member")
    start = found[1]
    raw = mapped[start:start + info.compress_size]
    if info.compress_type == zipfile.ZIP_STORED:
        data = raw
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        # Never more than one byte past the declared size (zlib.decompress's size is a hint, not a limit);
        # inflates without the GIL.
        data = zlib.decompressobj(-15).decompress(raw, info.file_size + 1)
    else:
        raise NotImplementedError(f"compression method {info.compress_type}")
    if len(data) > info.file_size:
        raise _TooLarge(f"inflates past the {info.file_size:,} bytes its header declares")
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile("size or CRC-32 does not match the member's record")
    return data


def _write_member(archive: zipfile.ZipFile, mapped, member: _Member) -> None:
    mode = 0o755 if (member.info.external_attr >> 16) & 0o111 else 0o644
    if member.info.file_size > STREAM_ABOVE and not member.rewrite_record:
        # ZipFile checks the CRC as it reads and serialises its own seeks, so threads may share it.
        # ZipExtFile stops at the declared size and checks the CRC there: a lying header ends as BadZipFile.
        with archive.open(member.info) as source, open(member.dest, "wb") as handle:
            shutil.copyfileobj(source, handle, 1 << 20)  # a 500 MB library is never held in memory whole
        os.chmod(member.dest, mode)
        return
    data = _member_bytes(mapped, member.info)
    if member.rewrite_record:
        dist_info = member.dest.parent.name
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        # Moved .data paths, dropped uninstalled ones and our INSTALLER line; BadRecord if unreadable.
        data = rewrite_installed(data, lambda path: installed_path(path, data_dir), f"{dist_info}/INSTALLER")
    # The file is new (its scratch directory is), so its mode is set as it is created.
    fd = os.open(member.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


@dataclass
class Unpacked:
    """One wheel's files, laid out as they go below the install directory, not yet merged into it."""

    wheel: Path  # the archive the RawSources point into: it must stay until the zip is written
    scratch: Path
    raws: dict[str, RawSource]  # path below the install directory -> the member's deflated bytes
    declared_bytes: int = 0  # what its members declare unpacked (each checked not to inflate past it)


class Stopped(Exception):
    """An unpack was told to stop (its build no longer needs it)."""


def install_wheels(wheels: list[Path], site: Path, ready: dict[str, Unpacked] | None = None) -> dict[str, RawSource]:
    """Unpack every wheel into site; returns {path below site: RawSource} for members copied verbatim.

    ready: wheels already unpacked (by file name), e.g. while the resolver ran. The wheels are
    merged in name order, so when two of them ship the same path the outcome does not depend on
    timing (the later name wins, as with pip).
    """
    site.mkdir(parents=True, exist_ok=True)
    ready = ready or {}
    ordered = sorted(wheels, key=lambda p: p.name)
    already = 0  # what the wheels unpacked ahead (each within the ceiling) declare together
    for wheel in (w for w in ordered if w.name in ready):
        already += ready[wheel.name].declared_bytes
        if already > MAX_UNPACKED_BYTES:
            raise UnsafeWheelError(f"{wheel.name}: takes the wheels past {MAX_UNPACKED_BYTES:,} bytes unpacked (a layer "
                                   f"may hold {UNZIPPED_LIMIT:,} bytes unzipped)")  # fmt: skip
    fresh = {u.wheel.name: u for u in unpack_wheels([w for w in ordered if w.name not in ready], site.parent, already=already)}
    raws: dict[str, RawSource] = {}
    for wheel in ordered:
        unpacked = ready.get(wheel.name) or fresh[wheel.name]
        _merge(unpacked.scratch, site)
        raws.update(unpacked.raws)
    return raws


def unpack_wheels(wheels: list[Path], parent: Path, stop: Callable[[], bool] = lambda: False,
                  already: int = 0, budget: UnpackBudget | None = None) -> list[Unpacked]:  # fmt: skip
    """Unpack each wheel into its own scratch directory below parent (.unpack-FILENAME).

    Members are inflated on a thread pool (zlib and file creation release the GIL), the big ones
    first so that the pool ends together. stop() is asked before each member: when it says so, the
    unpack ends with Stopped (what it wrote stays below parent, for the caller to remove).
    Sizes are bounded before anything is written (check_sizes: the members' declared sizes, plus
    `already` unpacked by the caller, within MAX_UNPACKED_BYTES; or the shared budget's running total) and
    while writing (no member
    inflates past its declared size); a wheel refused so removes what this call wrote.
    """
    archives: list[zipfile.ZipFile] = []
    maps: list[mmap.mmap] = []
    done: list[Unpacked] = []
    scratches: list[Path] = []
    failed = threading.Event()  # one member refused: the others stop instead of writing on
    try:
        jobs, dist_infos, total = [], [], already
        for wheel in wheels:
            try:
                archive = zipfile.ZipFile(wheel)
            except (zipfile.BadZipFile, OSError) as exc:
                raise UnsafeWheelError(f"{wheel.name}: damaged wheel ({exc})") from None
            archives.append(archive)
            with open(wheel, "rb") as handle:
                maps.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            scratch = parent / f".unpack-{wheel.name}"
            members, found, dist_info = _plan(archive, wheel, scratch)
            if budget is not None:
                before, total = total, total + budget.reserve([m.info for m in members], wheel.name)
            else:
                before, total = total, check_sizes([m.info for m in members], wheel.name, already=total)
            scratches.append(scratch)
            for directory in sorted({m.dest.parent for m in members} | {dist_info}):
                directory.mkdir(parents=True, exist_ok=True)
            jobs += [(archive, maps[-1], m) for m in members]
            done.append(Unpacked(wheel, scratch, found, total - before))
            dist_infos.append(dist_info)
        jobs.sort(key=lambda job: -job[2].info.file_size)

        def write(batch) -> None:
            for archive, mapped, member in batch:
                if stop() or failed.is_set():
                    raise Stopped()
                try:
                    _write_member(archive, mapped, member)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, _TooLarge, BadRecord) as exc:
                    failed.set()
                    what = "refused" if isinstance(exc, (_TooLarge, BadRecord)) else "damaged wheel"
                    raise UnsafeWheelError(f"{Path(archive.filename).name}: {what}, member "
                                           f"{member.info.filename!r} ({exc}); nothing was installed") from None  # fmt: skip

        with ThreadPool(max_workers=MAX_PARALLEL) as pool:
            batches = in_batches(jobs, lambda job: job[2].info.file_size, BATCH_BYTES)
            for future in [pool.submit(write, batch) for batch in batches]:
                try:
                    future.result()
                except Stopped:
                    if not failed.is_set():
                        raise  # else the refusal itself comes from another batch
        for dist_info in dist_infos:
            (dist_info / "INSTALLER").write_text(INSTALLER + "\n", encoding="utf-8")
    except UnsafeWheelError:
        for scratch in scratches:  # what a refused unpack wrote goes at once, not with the build's scratch tree
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        for archive in archives:
            archive.close()
        for mapped in maps:
            mapped.close()
    return done


def _merge(source: Path, dest: Path) -> None:
    """Move source's tree into dest (whole subtrees when dest lacks them), replacing same-named files."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in sorted(source.iterdir()):
        target = dest / child.name
        if child.is_dir() and target.is_dir():
            _merge(child, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(child, target)
    source.rmdir()
