"""Lock files: pinned requirements with hashes per target, in pip-tools' format.

recipes/NAME.lock/python3.12-x86_64.txt. A header records what the lock was made from, so a
build can tell a stale lock (the recipe's packages changed) from a current one. Pure logic.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from layerbuild import __version__
from layerbuild.model.runtimes import Target

_META = re.compile(r"^# layerbuild: ([a-z0-9_-]+)=(.*)$")
_HASH = re.compile(r"--hash=sha256:([0-9a-fA-F]{64})")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?==([^\s;\\]+)")


def requirements_digest(recipe) -> str:
    """What a lock depends on: the recipe's requirement strings and the indexes it names.

    Index settings from the user's environment (a mirror, a proxy) are deliberately left out: the
    hashes in the lock hold whichever mirror serves the files.
    """
    payload = json.dumps({"packages": sorted(recipe.packages), "index": recipe.index_url or "",
                          "extra": sorted(recipe.extra_index_urls)}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Lock:
    target_slug: str
    requirements_sha256: str
    body: str  # the pip-tools formatted pins with --hash lines
    sdist: list[str] = field(default_factory=list)
    backend: str = "wheels"

    @property
    def pins(self) -> dict[str, str]:
        """Canonical project name -> pinned version."""
        pins = {}
        for line in self.body.splitlines():
            match = _PIN.match(line.strip())
            if match:
                pins[canonicalize_name(match.group(1))] = match.group(3)
        return pins

    @property
    def extras(self) -> dict[str, frozenset[str]]:
        """Canonical project name -> the extras its pin line names, for pins that name some (uv names none)."""
        found = {}
        for line in self.body.splitlines():
            match = _PIN.match(line.strip())
            if match and match.group(2):
                found[canonicalize_name(match.group(1))] = frozenset(canonicalize_name(e.strip()) for e in
                                                                     match.group(2).split(",") if e.strip())  # fmt: skip
        return found

    @property
    def hashes(self) -> dict[str, frozenset[str]]:
        """Canonical project name -> the sha256 digests the lock allows for it."""
        found: dict[str, set[str]] = {}
        current = None
        for line in self.body.splitlines():
            stripped = line.strip()
            match = _PIN.match(stripped)
            if match:
                current = canonicalize_name(match.group(1))
                found.setdefault(current, set())
            elif not stripped or stripped.startswith("#"):
                current = None
            for digest in _HASH.findall(stripped):
                if current is not None:
                    found[current].add(digest.lower())
        return {name: frozenset(digests) for name, digests in found.items()}

    def render(self, target: Target) -> str:
        header = [
            f"# Locked by layerbuild {__version__} for {target.runtime.name} {target.arch}"
            f" (manylinux up to glibc {'%d.%d' % target.runtime.glibc}). Regenerate: layerbuild lock NAME",
            f"# layerbuild: target={self.target_slug}",
            f"# layerbuild: requirements-sha256={self.requirements_sha256}",
            f"# layerbuild: backend={self.backend}",
        ]
        if self.sdist:
            header.append(f"# layerbuild: sdist={','.join(sorted(self.sdist))}")
        body = "\n".join(ln for ln in self.body.splitlines() if not ln.startswith("# layerbuild:"))
        return "\n".join(header) + "\n" + body.strip("\n") + "\n"


def parse_lock(text: str) -> Lock:
    meta = {}
    body = []
    for line in text.splitlines():
        match = _META.match(line)
        if match:
            meta[match.group(1)] = match.group(2).strip()
        elif not line.startswith("# Locked by layerbuild"):
            body.append(line)
    sdist = [s for s in meta.get("sdist", "").split(",") if s]
    return Lock(
        target_slug=meta.get("target", ""),
        requirements_sha256=meta.get("requirements-sha256", ""),
        body="\n".join(body).strip("\n") + "\n",
        sdist=sdist,
        backend=meta.get("backend", "wheels"),
    )


def unsatisfied(lock: Lock, requirements: list[Requirement], target: Target) -> str | None:
    """Pure: the first of the recipe's top-level requirements the lock does not satisfy on the target, in words
    (pinned at all, at a version the specifier allows, with a hash, with the extras asked for when the pin line
    names extras: uv's locks name none, so their extras cannot be checked); None when the lock satisfies them all.
    A requirement whose marker excludes the target needs no pin."""
    if lock.target_slug and lock.target_slug != target.slug:
        return f"it was written for {lock.target_slug}, not {target.slug}"
    pins, hashes, extras = lock.pins, lock.hashes, lock.extras
    environment = target.marker_environment()
    for requirement in requirements:
        if requirement.marker is not None and not _applies(requirement, environment):
            continue
        name = canonicalize_name(requirement.name)
        version = pins.get(name)
        if version is None:
            return f"it pins no version of {requirement.name} (the recipe asks for {str(requirement)!r})"
        try:
            allowed = requirement.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            allowed = False
        if not allowed:
            return f"it pins {name}=={version}, which the recipe's {str(requirement)!r} does not allow"
        if not hashes.get(name):
            return f"it pins {name}=={version} without a --hash"
        listed = extras.get(name)
        missing = {canonicalize_name(e) for e in requirement.extras} - listed if listed is not None else set()
        if missing:
            return f"it pins {name} without the extras {', '.join(sorted(missing))} the recipe asks for"
    return None


def _applies(requirement: Requirement, environment: dict[str, str]) -> bool:
    """Whether the requirement's marker holds on the target; one packaging cannot evaluate is checked (True)."""
    try:
        return bool(requirement.marker.evaluate(environment))
    except Exception:  # noqa: BLE001 - packaging raises on comparisons it cannot make
        return True
