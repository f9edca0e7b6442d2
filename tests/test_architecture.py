"""The package's shape: each capability is one room (subpackage), and imports only point down.

Read statically from the source (every import, including those inside functions), so a new arrow
that points up or closes a cycle fails here, naming the importing module and what it imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "layerbuild"

# room -> level. A module may import from its own room and from rooms of a lower level only.
# backends.wheels and backends.docker share the backends room's protocol and helpers (backends/*.py)
# but never each other.
LEVELS = {
    "errors": 0, "limits": 0,
    "util": 1,
    "model": 2,
    "cache": 3,
    "backends": 4, "audit": 4,
    "backends.wheels": 5, "backends.docker": 5,
    "verify": 6,
    "build": 7, "trial": 7, "publish": 7, "klayers": 7,
    "cli": 8,
    "__main__": 9, "__init__": 9,
}  # fmt: skip
TOP_LEVEL_MODULES = {"__init__", "__main__", "errors", "limits"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")[1:]
    if len(parts) >= 2 and parts[0] == "backends" and (PACKAGE / "backends" / parts[1]).is_dir():
        return f"backends.{parts[1]}"
    return parts[0]


def is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every layerbuild module the file imports (`from pkg import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("layerbuild"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if is_module(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("layerbuild"))
    return {name for name in found if name != "layerbuild"}


def arrows() -> list[tuple[str, str]]:
    return [(module_name(path), target) for path in sorted(PACKAGE.rglob("*.py")) for target in sorted(imports_of(path))]


def test_every_module_is_in_a_room_with_a_level():
    rooms = {room(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert rooms - LEVELS.keys() == set(), "a new room needs its level in LEVELS"


def test_only_a_handful_of_top_level_modules():
    assert {p.stem for p in PACKAGE.glob("*.py")} <= TOP_LEVEL_MODULES


def test_no_relative_imports():
    """Absolute imports name the room a module comes from; relative ones hide an upward arrow."""
    relative = [module_name(path) for path in PACKAGE.rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.level > 0]  # fmt: skip
    assert relative == []


def test_imports_only_point_down():
    upward = []
    for source, target in arrows():
        a, b = room(source), room(target)
        if a != b and LEVELS[b] >= LEVELS[a]:
            upward.append(f"{source} ({a}) imports {target} ({b})")
    assert upward == []


def test_the_rooms_have_no_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in arrows():
        if room(source) != room(target):
            graph[room(source)].add(room(target))
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in seen and (cycle := visit(nxt, path + [node])):
                return cycle
        seen[node] = 2
        return None

    cycles = [c for n in sorted(graph) if n not in seen and (c := visit(n, []))]
    assert cycles == []


def test_the_checks_see_an_upward_arrow(tmp_path):
    """The scan itself works: an import of cli from util would be reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from layerbuild.cli.output import echo_json\n    from layerbuild.util import tree\n")
    assert imports_of(probe) == {"layerbuild.cli.output", "layerbuild.util.tree"}
    assert room("layerbuild.cli.output") == "cli" and LEVELS["cli"] > LEVELS["util"]
    assert room("layerbuild.backends.wheels.uv") == "backends.wheels" and room("layerbuild.backends.base") == "backends"
