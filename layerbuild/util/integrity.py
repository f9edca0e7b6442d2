"""Trust nothing that comes back from disk: stored artifacts against their hashes, layer zips against
their CRCs and their manifest, and output files that share no inode with the cache.

- discarded(): the one stderr line said when a stored artifact fails its hash and is fetched or built again.
- copy_file(): dist/ zips are copies of cache entries (a reflink where the filesystem shares extents),
  never hard links: damage to one can never reach the other.
- check_crcs(), check_manifest_sha256(), vet_layer_zip(): what `audit` checks before it reports, and
  what `publish` checks (with the audit) before any AWS call.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
import zipfile
from pathlib import Path

from layerbuild.model.errors import LayerbuildError
from layerbuild.util.tree import file_sha256

_BLOCK = 1 << 20
_print_lock = threading.Lock()


class IntegrityError(LayerbuildError):
    """A layer zip is damaged (a member fails its CRC) or no longer matches its manifest's sha256."""


def file_sha256_hex(path: Path) -> str:
    """The file's sha256 (hex), read in blocks."""
    return file_sha256(path).hex()


def discarded(path: Path, why: str, then: str) -> None:
    """One line on stderr: which stored file was thrown away, why, and what happens instead."""
    line = f"warning: {path}: {why}: discarded, {then}\n"
    with _print_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr never fails a build


# Errors copy_file_range gives where the kernel or filesystem cannot do it: fall back to a plain copy.
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM, errno.ETXTBSY}


def copy_file(source: Path, dest: Path) -> None:
    """Copy source to dest, a fresh name (never an existing file or a link planted there), as a new
    inode: copy_file_range shares extents where the filesystem can (btrfs, XFS: a reflink, nearly
    free) and copies in the kernel elsewhere; a plain copy when the call is not available."""
    with open(source, "rb") as src, open(dest, "xb") as dst:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < size:
                    done = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
                    if done == 0:
                        break
                    copied += done
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                copied = 0
        if copied < size or os.fstat(src.fileno()).st_size != size:
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, _BLOCK)


def check_crcs(zip_path: Path) -> None:
    """Inflate every member (call it on a zip safezip vetted: sizes and ratios are capped) and check its
    CRC-32; IntegrityError naming the first member that fails."""
    from layerbuild.util.safezip import CORRUPT_DATA_ERRORS

    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                try:
                    with archive.open(info) as member:
                        while member.read(_BLOCK):
                            pass
                except CORRUPT_DATA_ERRORS as exc:
                    raise IntegrityError(f"{zip_path}: entry {info.filename!r} fails its CRC-32 check or does not "
                                         f"inflate ({' '.join(str(exc).split())}): the zip is damaged; rebuild it") from None  # fmt: skip
    except zipfile.BadZipFile as exc:
        raise IntegrityError(f"{zip_path}: corrupt archive: {exc}") from None
    except OSError as exc:
        raise IntegrityError(f"{zip_path}: cannot read: {exc.strerror or exc}") from None


def check_manifest_sha256(zip_path: Path, required: bool = False) -> None:
    """The zip's sha256 against the manifest beside it. A missing manifest (or, unless required, one that
    is not layerbuild's) is no evidence either way; a mismatch names both files."""
    from layerbuild.model.manifest import manifest_path_for, read_manifest

    zip_path = Path(zip_path)
    manifest_path = manifest_path_for(zip_path)
    if manifest_path == zip_path or not manifest_path.is_file():
        if required:
            read_manifest(manifest_path)  # raises its own one line
        return
    try:
        manifest = read_manifest(manifest_path)
    except LayerbuildError:
        if required:
            raise
        return
    actual = file_sha256_hex(zip_path)
    if not isinstance(manifest.sha256, str) or actual != manifest.sha256.lower():
        raise IntegrityError(f"{zip_path}: sha256 {actual[:16]}... does not match the sha256 recorded in its manifest "
                             f"{manifest_path} ({str(manifest.sha256)[:16]}...): the zip changed after it was built; "
                             f"rebuild it")  # fmt: skip


def vet_layer_zip(zip_path: Path):
    """safezip's vetting (names, links, sizes), every member's CRC and the manifest's sha256 beside
    the zip; returns the LayerZip. Each problem raises one line naming the file."""
    from layerbuild.util.safezip import open_layer_zip

    layer = open_layer_zip(Path(zip_path))
    check_manifest_sha256(Path(zip_path))
    check_crcs(Path(zip_path))
    return layer


def vet_for_publish(zip_path: Path, manifest) -> None:
    """What publish checks before any AWS call: the vetting above, Lambda's unzipped size limit and the
    audit against the manifest's target. Raises PublishError (one line, 'nothing was published')."""
    from layerbuild.audit.rules import UNZIPPED_LIMIT, audit_files
    from layerbuild.audit.facts import read_layer_facts
    from layerbuild.publish.plan import PublishError
    from layerbuild.model.runtimes import make_target
    from layerbuild.util.safezip import open_layer_zip

    zip_path = Path(zip_path)
    try:
        layer = open_layer_zip(zip_path)
        if layer.unzipped_bytes > UNZIPPED_LIMIT:  # before inflating anything
            raise IntegrityError(f"{zip_path}: unzips to {layer.unzipped_bytes:,} bytes, over Lambda's "
                                 f"{UNZIPPED_LIMIT:,}-byte limit for a function and all its layers")  # fmt: skip
        check_manifest_sha256(zip_path, required=True)
        check_crcs(zip_path)
        facts = read_layer_facts(zip_path)
        report = audit_files(facts.files, make_target(manifest.python, manifest.architecture), facts.layer.zipped_bytes)
    except PublishError:
        raise
    except LayerbuildError as exc:
        raise PublishError(f"refusing to publish: {exc.message}; nothing was published") from None
    if report.errors:
        first = report.errors[0]
        raise PublishError(f"refusing to publish {zip_path}: it fails the audit with {len(report.errors)} error(s), "
                           f"the first [{first.rule}] {first.message}; nothing was published "
                           f"(see 'layerbuild audit {zip_path}')")  # fmt: skip
