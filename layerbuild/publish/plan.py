"""Publishing, the pure part: layer names, descriptions, sharing specs, local validation, the plan.

moto (and LocalStack) validate almost nothing, so every parameter is checked here against Lambda's
documented constraints before any call is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.errors import LayerbuildError, TargetError
from layerbuild.limits import DIRECT_UPLOAD_LIMIT
from layerbuild.model.manifest import Manifest
from layerbuild.model.regions import check_region
from layerbuild.model.runtimes import RUNTIMES, check_architecture

# Lambda takes zips up to 50 MB in the request (Content.ZipFile); larger ones go through S3.
MAX_DESCRIPTION = 256
MAX_LICENSE = 512
MAX_RUNTIMES = 15
LAYER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,140}$")
STATEMENT_ID = re.compile(r"^[a-zA-Z0-9_-]{1,100}$")
ACCOUNT_ID = re.compile(r"^\d{12}$")
ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
BUCKET = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class PublishError(LayerbuildError):
    """Publishing cannot start: bad arguments, a zip that does not match its manifest."""


def sanitise_layer_name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-")[:140]
    if not name:
        raise PublishError(f"cannot make a layer name from {text!r}: use --layer-name with letters, digits, - and _")
    return name


def default_layer_name(manifest: Manifest) -> str:
    """pymysql-py312-x86_64: the recipe, the runtime and the architecture."""
    return sanitise_layer_name(f"{manifest.name}-py{manifest.python.replace('.', '')}-{manifest.architecture}")


def check_layer_name(name: str) -> str:
    if not LAYER_NAME.match(name):
        raise PublishError(f"--layer-name {name!r}: Lambda layer names are 1-140 of letters, digits, '-' and '_'")
    return name


def describe(manifest: Manifest) -> str:
    """The layer Description: the pinned packages, cut to Lambda's 256 characters."""
    pins = ", ".join(f"{p.name}=={p.version}" for p in manifest.packages)
    text = f"{manifest.name} ({manifest.runtime} {manifest.architecture}): {pins}" if pins else manifest.description or manifest.name
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3].rsplit(", ", 1)[0] + " ..."
    return text[:MAX_DESCRIPTION]


@dataclass(frozen=True)
class Share:
    """Who may use the layer: one statement of the layer version's resource policy."""

    kind: str  # public | account | org
    principal: str  # "*" or an account id
    organization_id: str | None = None

    @property
    def statement_id(self) -> str:
        # Stable per grantee, so a re-run finds its own statement instead of adding another.
        suffix = {"public": "public", "account": f"account-{self.principal}", "org": f"org-{self.organization_id}"}[self.kind]
        return f"layerbuild-{suffix}"

    def parameters(self) -> dict:
        params = {"StatementId": self.statement_id, "Action": "lambda:GetLayerVersion", "Principal": self.principal}
        if self.organization_id:
            params["OrganizationId"] = self.organization_id
        return params


def parse_share(spec: str) -> Share:
    text = spec.strip()
    if text == "public":
        share = Share("public", "*")
    elif text.startswith("account:"):
        account = text.split(":", 1)[1]
        if not ACCOUNT_ID.match(account):
            raise PublishError(f"--share {spec!r}: an account id is 12 digits, e.g. account:123456789012")
        share = Share("account", account)
    elif text.startswith("org:"):
        org = text.split(":", 1)[1]
        if not ORG_ID.match(org):
            raise PublishError(f"--share {spec!r}: an organization id looks like o-abc123defg (o- then 10-32 lowercase letters or digits)")
        share = Share("org", "*", org)
    else:
        raise PublishError(f"--share {spec!r}: valid forms are public, account:123456789012, org:o-abc123defg")
    if not STATEMENT_ID.match(share.statement_id):  # pragma: no cover - guaranteed by the patterns above
        raise PublishError(f"--share {spec!r}: statement id {share.statement_id!r} is not valid")
    return share


def bucket_problem(bucket: str) -> str | None:
    """Why S3 would refuse this bucket name (general purpose bucket rules), or None."""
    if not BUCKET.match(bucket):
        return "3-63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit"
    if IP_ADDRESS.match(bucket):
        return "not formatted like an IP address"
    if ".-" in bucket or "-." in bucket:
        return "no '-' next to '.'"
    if bucket.startswith(("sthree-", "amzn-s3-demo-")) or bucket.endswith(("-s3alias", "--ol-s3", "--x-s3", ".mrap")):
        return "not a prefix or suffix S3 reserves (sthree-, amzn-s3-demo-, -s3alias, --ol-s3, --x-s3, .mrap)"
    return None


def bucket_for(template: str, region: str) -> str:
    bucket = template.replace("{region}", region)
    problem = bucket_problem(bucket)
    if problem:
        raise PublishError(f"--s3-bucket {template!r}: {bucket!r} is not a valid S3 bucket name ({problem})")
    return bucket


@dataclass
class LayerToPublish:
    """One built zip and everything Lambda is told about it."""

    zip_path: Path
    manifest: Manifest
    layer_name: str
    description: str
    compatible_runtimes: list[str]
    compatible_architectures: list[str]
    license_info: str | None

    @property
    def needs_s3(self) -> bool:
        return self.manifest.zipped_bytes > DIRECT_UPLOAD_LIMIT

    @property
    def s3_key(self) -> str:
        # Content-addressed: the same bytes are uploaded once and never overwrite other content.
        return f"layerbuild/{self.layer_name}/{self.manifest.sha256}.zip"

    def publish_parameters(self) -> dict:
        """publish_layer_version's arguments, without Content."""
        params = {
            "LayerName": self.layer_name,
            "Description": self.description,
            "CompatibleRuntimes": self.compatible_runtimes,
            "CompatibleArchitectures": self.compatible_architectures,
        }
        if self.license_info:
            params["LicenseInfo"] = self.license_info
        return params


def layer_to_publish(zip_path: Path, manifest: Manifest, layer_name: str | None = None) -> LayerToPublish:
    runtimes = list(dict.fromkeys(manifest.compatible_runtimes or [manifest.runtime]))
    # The count first: a hand-edited manifest listing too many would otherwise only hear about one name.
    if len(runtimes) > MAX_RUNTIMES:
        raise PublishError(f"{zip_path}: {len(runtimes)} compatible runtimes; Lambda accepts at most {MAX_RUNTIMES}")
    for runtime in runtimes:
        if runtime.removeprefix("python") not in RUNTIMES:
            raise PublishError(f"{zip_path}: manifest runtime {runtime!r} is not a Lambda Python runtime ({', '.join('python' + v for v in RUNTIMES)})")
    try:
        arch = check_architecture(manifest.architecture)
    except TargetError as exc:
        raise PublishError(f"{zip_path}: manifest {exc.message}") from None
    license_info = manifest.license
    if license_info and len(license_info) > MAX_LICENSE:
        raise PublishError(f"{zip_path}: license is {len(license_info)} characters; Lambda accepts at most {MAX_LICENSE}")
    name = check_layer_name(layer_name) if layer_name else default_layer_name(manifest)
    return LayerToPublish(zip_path, manifest, name, describe(manifest), runtimes, [arch], license_info)


@dataclass
class PublishOptions:
    regions: list[str]
    shares: list[Share] = field(default_factory=list)
    s3_bucket: str | None = None
    force: bool = False
    dry_run: bool = False


def make_options(regions, shares=(), s3_bucket=None, force=False, dry_run=False) -> PublishOptions:
    checked = list(dict.fromkeys(check_region(r) for r in regions))
    parsed = list({s.statement_id: s for s in (parse_share(x) for x in shares)}.values())
    return PublishOptions(checked, parsed, s3_bucket, force, dry_run)


def check_s3(layer: LayerToPublish, options: PublishOptions) -> None:
    if layer.needs_s3 and not options.s3_bucket:
        raise PublishError(
            f"{layer.zip_path.name} is {layer.manifest.zipped_bytes:,} bytes zipped, over Lambda's "
            f"{DIRECT_UPLOAD_LIMIT:,}-byte direct upload limit: add --s3-bucket BUCKET (a bucket in each target "
            f"region; '{{region}}' in the name is replaced by the region)"
        )
    if options.s3_bucket:
        for region in options.regions:
            bucket_for(options.s3_bucket, region)


def dry_run_plan(layer: LayerToPublish, options: PublishOptions) -> list[dict]:
    """What a real run would call, per region, with which parameters (content shown by size and hash)."""
    plan = []
    for region in options.regions:
        if layer.needs_s3:
            bucket = bucket_for(options.s3_bucket, region)
            content = {"S3Bucket": bucket, "S3Key": layer.s3_key}
            calls = [f"s3.put_object s3://{bucket}/{layer.s3_key} ({layer.manifest.zipped_bytes:,} bytes) unless present"]
        else:
            content = {"ZipFile": f"<{layer.manifest.zipped_bytes:,} bytes, sha256 {layer.manifest.sha256}>"}
            calls = []
        calls.append(
            f"lambda.publish_layer_version unless the newest version of {layer.layer_name} has CodeSha256 "
            f"{layer.manifest.code_sha256}" + (" (--force: always)" if options.force else "")
        )
        calls += [f"lambda.add_layer_version_permission {s.parameters()} unless present" for s in options.shares]
        plan.append({"region": region, "layer_name": layer.layer_name, "zip": str(layer.zip_path),
                     "parameters": {**layer.publish_parameters(), "Content": content}, "calls": calls})  # fmt: skip
    return plan
