"""The manifest written beside every layer zip (dist/NAME-python3.12-x86_64.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import LayerbuildError
from .limits import MANIFEST_MAX_BYTES, read_capped_text

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
    def from_dict(cls, data: dict) -> "Manifest":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["packages"] = [PackagePin(**p) for p in data.get("packages", [])]
        return cls(**values)


def manifest_path_for(zip_path: Path) -> Path:
    return zip_path.with_suffix(".json")


def read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(read_capped_text(path, MANIFEST_MAX_BYTES, "manifest", LayerbuildError))
        return Manifest.from_dict(data)
    except FileNotFoundError:
        raise LayerbuildError(f"{path}: no manifest beside the zip (build it with layerbuild build, or pass --python and --arch)") from None
    except (ValueError, TypeError, KeyError, AttributeError):  # another tool's JSON, or a damaged manifest
        raise LayerbuildError(f"{path}: not a layerbuild manifest (fields missing or malformed); move it away or "
                              f"pass --python and --arch") from None  # fmt: skip
    except OSError as exc:
        raise LayerbuildError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
