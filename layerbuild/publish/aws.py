"""Publishing, the side effects: boto3 calls per region, concurrently, idempotently.

Credentials, profile and default region come from boto3's standard chain; AWS_ENDPOINT_URL (and
LAYERBUILD_ENDPOINT_URL_<REGION>, e.g. LAYERBUILD_ENDPOINT_URL_EU_WEST_1, for one region) point
the clients elsewhere. Throttling is retried by botocore's standard retry mode with backoff.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from layerbuild.limits import MANIFEST_MAX_BYTES
from layerbuild.model.arns import ascii_int, valid_layer_arn
from layerbuild.model.manifest import Manifest, manifest_path_for, read_manifest
from layerbuild.publish.plan import (
    LayerToPublish,
    PublishError,
    PublishOptions,
    bucket_for,
)
from layerbuild.util.netsafe import (
    Deadline,
    NetLimitExceeded,
    deadline_seconds,
    redact_text,
    redact_url,
)
from layerbuild.util.safetext import read_json as _read_json
from layerbuild.util.threadpool import ThreadPool
from layerbuild.util.tree import file_sha256

MAX_PARALLEL_REGIONS = 4
MAX_ATTEMPTS = 5  # retries after the first try (botocore's max_attempts): standard mode, backoff with jitter, throttling included
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120  # a 50 MB upload on a slow link
# One AWS call in all, botocore's retries and backoff included (the timeouts above are per read, and 6 attempts
# of them made 12 minutes): a 50 MB direct upload at ~200 KB/s. $LAYERBUILD_NET_DEADLINE overrides.
CALL_DEADLINE = 300.0


@dataclass
class RegionResult:
    region: str
    layer_name: str
    status: str  # published | unchanged | failed
    version: int | None = None
    arn: str | None = None
    reason: str = ""
    shared: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def endpoint_for(region: str) -> str | None:
    return os.environ.get("LAYERBUILD_ENDPOINT_URL_" + region.upper().replace("-", "_"))


_session_lock = threading.Lock()


def client(service: str, region: str):
    import boto3
    from botocore.config import Config

    seconds = deadline_seconds(CALL_DEADLINE)
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        connect_timeout=min(CONNECT_TIMEOUT, seconds),
        read_timeout=min(READ_TIMEOUT, seconds),
    )
    with _session_lock:  # boto3 sessions are not thread-safe to create clients from
        session = boto3.session.Session()
        made = session.client(service, region_name=region, config=config, endpoint_url=endpoint_for(region))
    bound_calls(made, seconds)
    return made


def bound_calls(aws_client, seconds: float) -> None:
    """Give every call of aws_client a total deadline: no request is sent, and no failure retried, past it.

    botocore's timeouts are per read and its retries multiply them; this caps the sum (plus at most one
    read timeout, which client() keeps within the deadline too). The error names the endpoint's host.
    """
    state = threading.local()  # s3transfer calls one client from several threads
    endpoint = aws_client.meta.endpoint_url
    events = aws_client.meta.events
    service = aws_client.meta.service_model.service_id.hyphenize()

    def start(**_):
        state.deadline = Deadline(seconds)

    def check(**_):
        deadline = getattr(state, "deadline", None)
        if deadline is not None and deadline.expired:
            raise deadline.exceeded(endpoint, "AWS answer")

    def check_retry(caught_exception=None, response=None, **_):
        status = response[0].status_code if response else 200
        if caught_exception is not None or status >= 500 or status == 429:
            check()

    events.register(f"before-call.{service}", start)
    events.register(f"before-send.{service}", check)
    events.register_first(f"needs-retry.{service}", check_retry)


def describe_error(exc: Exception) -> str:
    """One line from any botocore failure, never including credentials (nor a password in the endpoint URL)."""
    return redact_text(_describe_error(exc))


def _describe_error(exc: Exception) -> str:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    if isinstance(exc, NetLimitExceeded):
        return str(exc)

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (set a profile with AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, NoRegionError):
        return "no region"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the endpoint {redact_url(str(exc.kwargs.get('endpoint_url', '')))}".strip()
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def verify_zip(zip_path: Path, manifest: Manifest) -> None:
    digest = file_sha256(zip_path).hex()
    if digest != manifest.sha256:
        raise PublishError(f"{zip_path}: sha256 {digest[:16]}... does not match its manifest ({manifest.sha256[:16]}...); rebuild it")


def load_built_layer(zip_path: Path) -> Manifest:
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise PublishError(f"{zip_path}: no such zip")
    manifest = read_manifest(manifest_path_for(zip_path))
    verify_zip(zip_path, manifest)
    return manifest


def newest_version(lam, layer_name: str) -> dict | None:
    """The newest version of a layer with its Content (list output lacks CodeSha256), or None."""
    newest = None
    for page in lam.get_paginator("list_layer_versions").paginate(LayerName=layer_name):
        for version in page.get("LayerVersions", []):
            if newest is None or version["Version"] > newest["Version"]:
                newest = version
    if newest is None:
        return None
    return lam.get_layer_version(LayerName=layer_name, VersionNumber=newest["Version"])


def ensure_shares(lam, layer_name: str, version: int, options: PublishOptions) -> list[str]:
    """Add each share statement the version's policy does not hold yet (stable ids: re-runs add nothing)."""
    if not options.shares:
        return []
    from botocore.exceptions import ClientError

    try:
        policy = json.loads(lam.get_layer_version_policy(LayerName=layer_name, VersionNumber=version)["Policy"])
        present = {s.get("Sid") for s in policy.get("Statement", [])}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        present = set()
    for share in options.shares:
        if share.statement_id not in present:
            lam.add_layer_version_permission(LayerName=layer_name, VersionNumber=version, **share.parameters())
    return [s.statement_id for s in options.shares]


def upload_to_s3(layer: LayerToPublish, region: str, template: str) -> dict:
    from botocore.exceptions import ClientError

    bucket = bucket_for(template, region)
    s3 = client("s3", region)
    try:
        head = s3.head_object(Bucket=bucket, Key=layer.s3_key)
        if head.get("ContentLength") == layer.manifest.zipped_bytes:
            return {"S3Bucket": bucket, "S3Key": layer.s3_key}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(layer.zip_path), bucket, layer.s3_key)
    return {"S3Bucket": bucket, "S3Key": layer.s3_key}


def drop_retry_duplicate(lam, layer: LayerToPublish, checked: dict | None, version: int, arn: str) -> tuple[int, str]:
    """Undo the duplicate a retried PublishLayerVersion makes when AWS acted but its answer was lost.

    botocore retries the call after a dropped connection; the first attempt's version then exists
    too, with the same content. Keep that earlier version (looking back at most 5) and delete the
    one this call just created, which nobody has been told about.
    """
    first_new = (checked["Version"] if checked else 0) + 1
    for candidate in range(max(first_new, version - 5), version):
        try:
            earlier = lam.get_layer_version(LayerName=layer.layer_name, VersionNumber=candidate)
        except Exception:  # deleted meanwhile, or not ours to read: nothing to undo
            continue
        if earlier.get("Content", {}).get("CodeSha256") == layer.manifest.code_sha256:
            lam.delete_layer_version(LayerName=layer.layer_name, VersionNumber=version)
            return candidate, earlier["LayerVersionArn"]
    return version, arn


def publish_region(layer: LayerToPublish, region: str, options: PublishOptions) -> RegionResult:
    try:
        lam = client("lambda", region)
        current = None if options.force else newest_version(lam, layer.layer_name)
        if current and current.get("Content", {}).get("CodeSha256") == layer.manifest.code_sha256:
            version, arn, status = current["Version"], current["LayerVersionArn"], "unchanged"
        else:
            if layer.needs_s3:
                content = upload_to_s3(layer, region, options.s3_bucket)
            else:
                content = {"ZipFile": layer.zip_path.read_bytes()}
            response = lam.publish_layer_version(**layer.publish_parameters(), Content=content)
            version, arn, status = response["Version"], response["LayerVersionArn"], "published"
            if not options.force:
                version, arn = drop_retry_duplicate(lam, layer, current, version, arn)
        if not valid_layer_arn(arn) or ascii_int(version) is None:  # an endpoint's answer, printed and pasted
            raise PublishError(f"the endpoint answered a LayerVersionArn {str(arn)[:80]!r} (version {str(version)[:20]!r}) "
                               "that is not a Lambda layer-version ARN; nothing recorded")  # fmt: skip
        shared = ensure_shares(lam, layer.layer_name, version, options)
        return RegionResult(region, layer.layer_name, status, version, arn, shared=shared)
    except PublishError as exc:
        return RegionResult(region, layer.layer_name, "failed", reason=exc.message)
    except Exception as exc:  # one region's failure must not stop the others
        return RegionResult(region, layer.layer_name, "failed", reason=describe_error(exc))


def publish_layer(layer: LayerToPublish, options: PublishOptions,
                  progress: Callable[[str, str], None] | None = None) -> list[RegionResult]:  # fmt: skip
    """Publish one layer to every region on a bounded pool; results in the order regions were given."""
    progress = progress or (lambda region, message: None)

    def one(region: str) -> RegionResult:
        progress(region, f"publishing {layer.layer_name}")
        result = publish_region(layer, region, options)
        detail = f"version {result.version}" if result.version else result.reason
        progress(region, f"{result.status}: {detail}")
        return result

    with ThreadPool(max_workers=max(1, min(MAX_PARALLEL_REGIONS, len(options.regions)))) as pool:
        results = list(pool.map(one, options.regions))
    record_arns(layer, results)
    return results


def arns_path_for(zip_path: Path) -> Path:
    return zip_path.with_name(zip_path.name[: -len(".zip")] + ".arns.json")


def record_arns(layer: LayerToPublish, results: list[RegionResult]) -> Path | None:
    """Merge region -> LayerVersionArn into NAME-pythonX.Y-ARCH.arns.json beside the zip (atomically)."""
    done = {r.region: r.arn for r in results if r.arn}
    if not done:
        return None
    path = arns_path_for(layer.zip_path)
    if path.exists() and not path.is_file():
        raise PublishError(f"{path}: not a file (a directory or a device where the ARN record goes); move it away "
                           f"and publish again: the layer versions are published already")  # fmt: skip
    try:  # a damaged record (not JSON, nested too deep, not an object) is replaced by what was just published
        existing = _read_json(path, max_bytes=MANIFEST_MAX_BYTES) if path.is_file() else {}
        if not isinstance(existing, dict):
            existing = {}
    except (OSError, ValueError):
        existing = {}
    existing = {region: arn for region, arn in existing.items() if isinstance(region, str) and valid_layer_arn(arn)}
    existing.update(done)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(dict(sorted(existing.items())), indent=2) + "\n")
    os.chmod(name, 0o644)
    os.replace(name, path)
    return path
