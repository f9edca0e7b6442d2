"""Klayers data: API paths, response parsing and package matching. Pure logic, no I/O.

Klayers (keithrozario/Klayers) publishes one layer per package, Python version and architecture in
each region. Its API answers JSON lists of layer objects; older published data used other field
names, both are accepted (../shared/reference/lambda.md, section Klayers).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

from packaging.utils import canonicalize_name

from layerbuild.errors import KlayersError, TargetError
from layerbuild.model.arns import ascii_int, valid_layer_arn
from layerbuild.model.runtimes import RUNTIMES, check_architecture, normalise_python

DEFAULT_API_URL = "https://api.klayers.cloud"
ACCOUNT = "770693421928"
# Python versions Klayers builds layers for, per architecture: from the runtime matrix (Runtime.klayers).
SUPPORTED_PYTHON = tuple(v for v, r in RUNTIMES.items() if "x86_64" in r.klayers)
SUPPORTED_ARM64_PYTHON = tuple(v for v, r in RUNTIMES.items() if "arm64" in r.klayers)

# What is shown beside an ARN in snippets: a PEP 508 name and a version-like token, nothing else.
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?", re.ASCII)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}", re.ASCII)

# Field aliases: current API name first, then the older published-data names.
_FIELDS = {
    "package": ("package", "pckg"),
    "version": ("packageVersion", "package_version", "pckgVrsn"),
    "arn": ("arn", "layer_version_arn", "layerVersionArn"),
    "status": ("deployStatus", "deploy_status", "dplySts"),
    "expiry": ("expiryDate", "time_to_live", "expiry_date", "exDt"),
    "region": ("region", "deployed_region", "rgn"),
    "layer_version": ("layerVersion", "layer_version", "lyrVrsn"),
    "dependencies": ("dependencies", "rqrmntsTxt"),
}


@dataclass(frozen=True)
class KlayersLayer:
    """One published layer version of one package."""

    package: str
    version: str
    arn: str
    status: str = "latest"  # latest | deprecated
    expiry: str | None = None  # when a deprecated version is deleted
    dependencies: tuple[str, ...] = ()
    layer_version: int | None = None

    @property
    def key(self) -> str:
        """PEP 503 name: how pip would spell it for comparison."""
        return canonicalize_name(self.package)

    @property
    def layer_name(self) -> str:
        parts = self.arn.split(":")
        return parts[6] if len(parts) > 6 else self.arn

    def to_dict(self) -> dict:
        data = asdict(self)
        data["dependencies"] = list(self.dependencies)
        return data


@dataclass(frozen=True)
class KlayersTarget:
    """What Klayers calls a Python version: the path segment p3.12 or p3.12-arm64."""

    python: str
    arch: str = "x86_64"

    @property
    def segment(self) -> str:
        return f"p{self.python}" + ("-arm64" if self.arch == "arm64" else "")


def klayers_target(pyver: str, arch: str = "x86_64") -> KlayersTarget:
    """Accept p3.8, 3.8, python3.8 (and py38); reject versions Klayers does not publish."""
    arch = check_architecture(arch)
    text = str(pyver).strip().lower()
    if text.endswith("-arm64"):  # p3.12-arm64 as Klayers spells it
        text, arch = text[: -len("-arm64")], "arm64"
    python = normalise_python(text)
    supported = SUPPORTED_ARM64_PYTHON if arch == "arm64" else SUPPORTED_PYTHON
    if python not in supported:
        shown = ", ".join(f"p{v}" + ("-arm64" if arch == "arm64" else "") for v in supported)
        raise TargetError(f"Klayers has no layers for Python {pyver!r} on {arch}; supported: {shown}")
    return KlayersTarget(python, arch)


def latest_path(target: KlayersTarget, region: str) -> str:
    return f"/api/v2/{target.segment}/layers/latest/{quote(region)}"


def history_path(target: KlayersTarget, region: str, package: str) -> str:
    return f"/api/v2/{target.segment}/layers/{quote(region)}/{quote(package)}"


def _pick(item: dict, name: str):
    for alias in _FIELDS[name]:
        if alias in item and item[alias] is not None:
            return item[alias]
    return None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_layers(data, where: str, warnings: list[str] | None = None) -> list[KlayersLayer]:
    """A decoded response body -> layers; anything else is a KlayersError naming `where`.

    Used before a response is cached, so a malformed answer never reaches the cache. An item whose
    ARN is not a Lambda layer-version ARN, or whose package, version or layer version is not what
    those fields can hold, is dropped (it would be pasted into Terraform or SAM as is): one line
    about it is appended to `warnings`.
    """
    if isinstance(data, dict) and not data:
        return []  # the per-package endpoints answer {} for "nothing"
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise KlayersError(f"{where}: malformed Klayers response: expected a JSON list of layers, got {type(data).__name__}")
    layers = []
    dropped = warnings if warnings is not None else []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise KlayersError(f"{where}: malformed Klayers response: item {index} is not an object")
        arn = _pick(item, "arn")
        version = _pick(item, "version")
        if not isinstance(arn, str) or not arn.startswith("arn:") or not isinstance(version, (str, int, float)) \
                or isinstance(version, bool):
            raise KlayersError(f"{where}: malformed Klayers response: item {index} has no arn/packageVersion")
        problem = _item_problem(item, arn, str(version))
        if problem:
            dropped.append(f"{where}: dropped item {index} of the Klayers answer: {problem}")
            continue
        package = _pick(item, "package") or _package_from_arn(arn)
        deps = _pick(item, "dependencies") or ()
        if isinstance(deps, str):
            deps = deps.splitlines()
        if not isinstance(deps, (list, tuple)):
            raise KlayersError(f"{where}: malformed Klayers response: item {index} has dependencies that are not a list")
        layer_version = _pick(item, "layer_version")
        layer_version = ascii_int(arn.rsplit(":", 1)[-1]) if layer_version is None else ascii_int(layer_version)
        expiry = _pick(item, "expiry")
        layers.append(
            KlayersLayer(
                package=str(package),
                version=str(version),
                arn=arn,
                status=str(_pick(item, "status") or "latest"),
                expiry=str(expiry) if expiry is not None else None,
                dependencies=tuple(str(d).strip() for d in deps if str(d).strip()),
                layer_version=layer_version,
            )
        )
    return layers


def _item_problem(item: dict, arn: str, version: str) -> str | None:
    """Why an item cannot be used as it is (None when it can)."""
    if not valid_layer_arn(arn):
        return f"arn {_shown(arn)} is not a Lambda layer-version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)"
    package = _pick(item, "package") or _package_from_arn(arn)
    if not isinstance(package, str) or not _PACKAGE.fullmatch(package):
        return f"package {_shown(package)} is not a package name"
    if not _VERSION.fullmatch(version):
        return f"packageVersion {_shown(version)} is not a version"
    layer_version = _pick(item, "layer_version")
    if layer_version is not None and ascii_int(layer_version) is None:
        return f"layerVersion {_shown(layer_version)} is not a whole number of ASCII digits"
    return None


def _package_from_arn(arn: str) -> str | None:
    """Klayers-p312-requests / Klayers-python38-requests / Klayers-p312-arm64-requests -> requests.

    The history endpoint projects no package field; the layer name carries it.
    """
    parts = arn.split(":")
    if len(parts) < 7 or not parts[6].startswith("Klayers-"):
        return None
    name = parts[6][len("Klayers-"):]
    _, _, rest = name.partition("-")  # drop p312 / python38
    if rest.startswith("arm64-"):
        rest = rest[len("arm64-"):]
    return rest or None


@dataclass
class Lookup:
    """Which asked-for packages Klayers has (PEP 503 matching) and which it does not."""

    found: list[KlayersLayer] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def by_name(layers: list[KlayersLayer]) -> dict[str, KlayersLayer]:
    """Canonical name -> newest latest layer (highest layer version when a listing repeats one)."""
    index: dict[str, KlayersLayer] = {}
    for layer in layers:
        if layer.status != "latest":
            continue
        current = index.get(layer.key)
        if current is None or (layer.layer_version or 0) > (current.layer_version or 0):
            index[layer.key] = layer
    return index


def select(layers: list[KlayersLayer], packages: list[str]) -> Lookup:
    """Only the named packages (in the order asked); all latest layers when none are named."""
    index = by_name(layers)
    if not packages:
        return Lookup(found=sorted(index.values(), key=lambda layer: layer.key))
    result = Lookup()
    for package in dict.fromkeys(packages):
        layer = index.get(canonicalize_name(package))
        if layer is None:
            result.missing.append(package)
        elif layer not in result.found:
            result.found.append(layer)
    return result


def history_rows(layers: list[KlayersLayer]) -> list[KlayersLayer]:
    """Every version of a package, newest layer version first."""
    return sorted(layers, key=lambda layer: (layer.layer_version or 0, layer.arn), reverse=True)
