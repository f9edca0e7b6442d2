"""Reading installed distributions (*.dist-info) in a layer's python/ directory."""

from __future__ import annotations

from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import canonicalize_name

from layerbuild.model.manifest import PackagePin
from layerbuild.util.records import record_paths

MAX_MODULE_NAME = 200  # bytes: a file or folder name is at most 255 on Linux, with room for .cpython-312-...so
MAX_METADATA_BYTES = 16 << 20  # top_level.txt and RECORD: the largest real RECORDs are a few MB


def _metadata(dist_info: Path):
    try:
        return HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def installed_packages(site: Path) -> list[PackagePin]:
    """(name, version) of every distribution in site, sorted by canonical name."""
    pins = []
    for dist_info in sorted(site.glob("*.dist-info")):
        meta = _metadata(dist_info)
        if meta is None or not meta.get("Name"):
            continue
        pins.append(PackagePin(meta["Name"], meta.get("Version", "")))
    return sorted(pins, key=lambda p: canonicalize_name(p.name))


def wheel_tags(dist_info: Path) -> list[str]:
    """The `Tag:` lines of a dist-info's WHEEL file (py3-none-any, cp312-cp312-manylinux_...)."""
    try:
        text = (dist_info / "WHEEL").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def _head_text(path: Path) -> str:
    """The start of a metadata file (at most MAX_METADATA_BYTES), decoded leniently."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_METADATA_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def top_level_modules(site: Path) -> list[str]:
    """Importable top-level names the distributions provide (top_level.txt, else RECORD)."""
    names: set[str] = set()
    for dist_info in sorted(site.glob("*.dist-info")):
        top_level = dist_info / "top_level.txt"
        found = set()
        if top_level.is_file():
            found = {ln.strip() for ln in _head_text(top_level).splitlines() if ln.strip()}
        else:
            record = dist_info / "RECORD"
            if record.is_file():
                for path in record_paths(_head_text(record)):
                    first = path.split("/", 1)[0]
                    if first.endswith(".py"):
                        found.add(first[:-3])
                    elif first and "." not in first and first != "__pycache__" and (site / first).is_dir():
                        found.add(first)
                    elif ".cpython-" in first or first.endswith(".abi3.so"):
                        found.add(first.split(".", 1)[0])
        for name in found:
            name = name.replace("/", ".")
            if name.startswith("_") or "." in name or not name.isidentifier():
                continue  # private helpers and namespace sub-paths are imported through their parent
            if len(name.encode("utf-8")) > MAX_MODULE_NAME:
                continue  # no file system holds such a name: not a module, whatever the metadata says
            if (site / name).is_dir() or (site / f"{name}.py").is_file() or any(site.glob(f"{name}.*.so")) or any(site.glob(f"{name}.so")):
                names.add(name)
    return sorted(names)
