"""A layer zip against itself and its manifest: safezip's vetting, every member's CRC, the sha256 recorded
in the manifest beside it. What `audit` checks before it reports, and `publish` before any AWS call."""

from __future__ import annotations

from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.util.integrity import IntegrityError, check_crcs, file_sha256_hex


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
