"""What `publish` checks before any AWS call: the layer's integrity, Lambda's unzipped size limit and the audit
for the manifest's target. One line each, and nothing is published."""

from __future__ import annotations

from pathlib import Path

from layerbuild.audit.facts import read_layer_facts
from layerbuild.audit.integrity import check_manifest_sha256
from layerbuild.audit.rules import audit_files
from layerbuild.errors import LayerbuildError
from layerbuild.limits import UNZIPPED_LIMIT
from layerbuild.model.runtimes import make_target
from layerbuild.publish.plan import PublishError
from layerbuild.util.integrity import IntegrityError, check_crcs
from layerbuild.util.safezip import open_layer_zip


def vet_for_publish(zip_path: Path, manifest) -> None:
    """What publish checks before any AWS call: the vetting above, Lambda's unzipped size limit and the
    audit against the manifest's target. Raises PublishError (one line, 'nothing was published')."""
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
