"""The manifest written beside every layer zip (dist/NAME-python3.12-x86_64.json)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.limits import MANIFEST_MAX_BYTES, read_capped_bytes
from layerbuild.util import safetext

MANIFEST_VERSION = 1


@dataclass
class PackagePin:
    name: str
    version: str


@dataclass
class Manifest:
    name: str
    runtime: str  # python3.12
    python: str  # 3.12
    architecture: str  # x86_64 | arm64
    backend: str  # wheels | docker
    packages: list[PackagePin]
    file_count: int
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str  # hex digest of the zip
    code_sha256: str  # base64 of the digest, as Lambda reports CodeSha256
    zip: str  # file name of the zip, beside this manifest
    description: str = ""
    license: str | None = None
    compatible_runtimes: list[str] = field(default_factory=list)
    lock_sha256: str | None = None
    layerbuild_version: str = ""
    manifest_version: int = MANIFEST_VERSION
    # Free-form sections added by later stages (audit summary, bytecode, slimming...).
    extra: dict = field(default_factory=dict)
    # Whether the built tree's modules imported on the target's Python (None: a manifest from before
    # verification existed), and how: {"how", "where", "python", "modules", "seconds", ...} or {"reason"}.
    verified: bool | None = None
    verification: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: object, where: str = "manifest") -> Manifest:
        """A Manifest from parsed JSON, every field checked for its type (ManifestError naming the field)."""
        values = checked_fields(data, where)
        values["packages"] = [PackagePin(p["name"], p["version"]) for p in values.get("packages", [])]
        return cls(**values)


class ManifestError(LayerbuildError):
    """A manifest file that is missing, unreadable or not a layerbuild manifest."""


_NOT_OURS = "not a layerbuild manifest"
_STR, _INT, _OPT_STR = "a string", "a whole number >= 0", "a string or null"
_NAME, _PYTHON = "a recipe name (lowercase letters, digits, '-', '_')", "a Python version such as \"3.12\""
_PATTERNS = {_NAME: re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$"), _PYTHON: re.compile(r"^[0-9]{1,2}\.[0-9]{1,3}$")}  # recipe.NAME_PATTERN
# field -> (what it must be, whether a manifest must have it); the types Manifest declares.
_FIELDS: dict[str, tuple[str, bool]] = {
    "name": (_NAME, True), "runtime": (_STR, True), "python": (_PYTHON, True), "architecture": ("x86_64 or arm64", True),
    "backend": (_STR, True), "packages": ("a list of {\"name\", \"version\"} objects", True),
    "file_count": (_INT, True), "zipped_bytes": (_INT, True), "unzipped_bytes": (_INT, True), "sha256": (_STR, True),
    "code_sha256": (_STR, True), "zip": (_STR, True), "description": (_OPT_STR, False), "license": (_OPT_STR, False),
    "compatible_runtimes": ("a list of strings", False), "lock_sha256": (_OPT_STR, False),
    "layerbuild_version": (_STR, False), "manifest_version": (_INT, False), "extra": ("an object", False),
    "verified": ("true, false or null", False), "verification": ("an object", False),
}  # fmt: skip


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _fits(expected: str, value: object) -> bool:
    if expected == _STR:
        return isinstance(value, str)
    if expected in _PATTERNS:
        return isinstance(value, str) and _PATTERNS[expected].fullmatch(value) is not None
    if expected == _OPT_STR:
        return value is None or isinstance(value, str)
    if expected == _INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if expected == "x86_64 or arm64":
        return value in ("x86_64", "arm64")
    if expected == "a list of strings":
        return isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    if expected == "an object":
        return isinstance(value, dict)
    if expected == "true, false or null":
        return value is None or isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(p, dict) and set(p) >= {"name", "version"} and
                                           all(isinstance(p[k], str) for k in ("name", "version")) for p in value)  # fmt: skip


def checked_fields(data: object, where: str) -> dict:
    """Pure: the known fields of a parsed manifest, each of the type Manifest declares; ManifestError naming
    the first field that is missing or of another type (other keys are ignored: newer versions may add some)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: {_NOT_OURS} (a JSON object is expected, this is {_type_name(data)})")
    values = {}
    for name, (expected, required) in _FIELDS.items():
        if name not in data:
            if required:
                raise ManifestError(f"{where}: {_NOT_OURS} (field {name!r} is missing)")
            continue
        value = data[name]
        if not _fits(expected, value):
            shown = repr(value) if isinstance(value, str) and len(value) <= 40 else _type_name(value)
            raise ManifestError(f"{where}: {_NOT_OURS}: field {name!r} must be {expected}, not {shown}")
        values[name] = "" if name == "description" and value is None else value
    return values


def manifest_path_for(zip_path: Path) -> Path:
    return zip_path.with_suffix(".json")


def read_manifest(path: Path) -> Manifest:
    """The manifest at path, size-capped, depth-limited and checked field by field; ManifestError in one line."""
    try:
        raw = read_capped_bytes(path, MANIFEST_MAX_BYTES, "manifest", ManifestError)
        data = safetext.loads(raw, unique_keys=True)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest beside the zip (build it with layerbuild build, or pass --python and --arch)") from None
    except safetext.JsonInputError as exc:  # another tool's JSON, or a damaged manifest
        raise ManifestError(f"{path}: {_NOT_OURS} ({exc}); move it away or pass --python and --arch") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
    return Manifest.from_dict(data, str(path))
