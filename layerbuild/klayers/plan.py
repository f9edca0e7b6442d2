"""Reuse or build: which of a recipe's requirements a Klayers layer covers, and what remains.

Pure planning: the caller fetches the Klayers listing and reads the lock; this module only
decides. A requirement is covered when Klayers has a latest layer for it on the target whose
package version satisfies the recipe's specifier and, when the recipe has a committed lock, equals
the locked pin. Lambda allows 5 layers per function: when the covered layers plus the recipe's own
layer would exceed that, the extra requirements are built into the own layer instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from layerbuild.klayers.model import KlayersLayer, by_name
from layerbuild.model.runtimes import Target

MAX_LAYERS = 5  # Lambda: at most 5 layers per function


@dataclass(frozen=True)
class Covered:
    requirement: str
    layer: KlayersLayer

    def to_dict(self) -> dict:
        return {"requirement": self.requirement, "package": self.layer.package, "version": self.layer.version,
                "arn": self.layer.arn}  # fmt: skip


@dataclass(frozen=True)
class Remaining:
    requirement: str  # what the own layer must build (with the lock's pin applied)
    reason: str

    def to_dict(self) -> dict:
        return {"requirement": self.requirement, "reason": self.reason}


@dataclass
class TargetPlan:
    target: Target
    covered: list[Covered] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def arns(self) -> list[str]:
        """Klayers ARNs in recipe order: the stack to attach, before the recipe's own layer."""
        return [c.layer.arn for c in self.covered]

    @property
    def remaining_packages(self) -> tuple[str, ...]:
        return tuple(r.requirement for r in self.remaining)

    @property
    def layer_count(self) -> int:
        return len(self.covered) + (1 if self.remaining else 0)

    def to_dict(self) -> dict:
        return {
            "target": self.target.slug,
            "covered": [c.to_dict() for c in self.covered],
            "remaining": [r.to_dict() for r in self.remaining],
            "arns": self.arns,
            "layers": self.layer_count,
            "notes": list(self.notes),
        }


def _pinned(req: Requirement, pin: str) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name}{extras}=={pin}{marker}"


def _marker_applies(req: Requirement, target: Target) -> bool:
    if not req.marker:
        return True
    return req.marker.evaluate(target.marker_environment())


def why_not(req: Requirement, layer: KlayersLayer | None, pin: str | None) -> str | None:
    """None when the layer covers req; else the reason it does not."""
    if layer is None:
        return "Klayers has no layer for it"
    if req.extras:
        return f"extras [{','.join(sorted(req.extras))}] are not in the Klayers layer"
    try:
        version = Version(layer.version)
    except InvalidVersion:
        return f"Klayers layer version {layer.version!r} is not a valid version"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"Klayers has {layer.version}, the recipe wants {req.specifier}"
    if pin is not None and Version(pin) != version:
        return f"Klayers has {layer.version}, the lock pins {pin}"
    return None


def plan_target(requirements: list[Requirement], target: Target, layers: list[KlayersLayer] | None,
                pins: dict[str, str] | None = None, max_layers: int = MAX_LAYERS) -> TargetPlan:  # fmt: skip
    """Decide per requirement: a Klayers layer, or the recipe's own layer.

    layers is None when Klayers publishes nothing for this target (e.g. arm64 on Python 3.9).
    """
    plan = TargetPlan(target)
    pins = pins or {}
    index = by_name(layers or [])
    for req in requirements:
        key = canonicalize_name(req.name)
        pin = pins.get(key)
        requirement = _pinned(req, pin) if pin else str(req)
        if layers is None:
            plan.remaining.append(Remaining(requirement, f"Klayers publishes no layers for {target.slug}"))
            continue
        if not _marker_applies(req, target):
            plan.remaining.append(Remaining(requirement, f"its marker excludes {target.slug}"))
            continue
        reason = why_not(req, index.get(key), pin)
        if reason:
            plan.remaining.append(Remaining(requirement, reason))
        else:
            plan.covered.append(Covered(requirement, index[key]))
    _fit_layer_limit(plan, pins, max_layers)
    return plan


def _fit_layer_limit(plan: TargetPlan, pins: dict[str, str], max_layers: int) -> None:
    """Prefer building more ourselves to staying over Lambda's layer limit."""
    if plan.layer_count <= max_layers:
        return
    keep = max_layers - 1  # the moved requirements need the own layer
    moved = plan.covered[keep:]
    plan.covered = plan.covered[:keep]
    for item in moved:
        plan.remaining.append(Remaining(item.requirement, f"over Lambda's {max_layers}-layer limit: built into the own layer"))
    plan.notes.append(
        f"{len(moved) + keep} Klayers layers plus the own layer would exceed Lambda's {max_layers}-layer limit; "
        f"building {', '.join(canonicalize_name(m.layer.package) for m in moved)} into the own layer instead"
    )


def shadowed(plan: TargetPlan, own_packages: list[str]) -> list[str]:
    """Packages both in the own layer and in a covering Klayers layer (the layer or its bundled dependencies).

    Lambda extracts layers in order and the later one wins, so the own layer (attached last)
    shadows the Klayers copy: both ship and the versions may differ.
    """
    provided: set[str] = set()
    for item in plan.covered:
        provided.add(item.layer.key)
        for dep in item.layer.dependencies:
            name = dep.split("==")[0].split(";")[0].strip()
            if name and not name.startswith("#"):
                try:
                    provided.add(canonicalize_name(Requirement(name).name))
                except InvalidRequirement:  # a free-text line in requirements.txt: not a package
                    continue
    return sorted({canonicalize_name(p) for p in own_packages} & provided)
