"""Finding a local interpreter for a target: pythonX.Y on PATH that really is X.Y on the right machine.

pyenv installs shims for every version it knows of; a shim for a version that is not installed exits
non-zero ("pyenv: python3.8: command not found"), so each candidate is probed by running it, bounded.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from layerbuild.model.runtimes import MACHINE

PROBE_TIMEOUT = 15
# Prints "3.11 x86_64 /real/executable" for the probe's parser.
_PROBE = "import os, sys; print('%d.%d' % sys.version_info[:2], os.uname().machine, sys.executable)"


@dataclass(frozen=True)
class Interpreter:
    executable: Path  # the real interpreter (sys.executable), not a shim
    python: str  # "3.11"
    machine: str  # x86_64 | aarch64


def parse_probe(output: str) -> Interpreter | None:
    """Pure: the probe's one line -> Interpreter (None when it is not what the probe prints)."""
    parts = output.strip().split(" ", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    return Interpreter(Path(parts[2]), parts[0], parts[1])


def probe(executable: str | list[str]) -> Interpreter | None:
    """Run the interpreter (a path, or a command such as qemu-aarch64-static -L SYSROOT python3.11), bounded."""
    command = [executable] if isinstance(executable, str) else list(executable)
    try:
        done = subprocess.run([*command, "-I", "-S", "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None  # e.g. a pyenv shim for a version that is not installed
    return parse_probe(done.stdout)


def pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def pyenv_installs(python: str) -> list[str]:
    """pyenv's own installs of X.Y (newest patch first): usable even when no shim selects them."""
    root = pyenv_root() / "versions"
    pattern = re.compile(rf"^{re.escape(python)}\.(\d+)$")  # final releases only: 3.12.1, not 3.12.0rc1
    found = []
    if root.is_dir():
        for entry in root.iterdir():
            match = pattern.match(entry.name)
            exe = entry / "bin" / f"python{python}"
            if match and exe.is_file():
                found.append((int(match.group(1)), str(exe)))
    return [exe for _, exe in sorted(found, reverse=True)]


def candidates(python: str, path: str | None = None) -> list[str]:
    """Every pythonX.Y executable on PATH, in PATH order, without repeats; then pyenv's installs. pyenv's
    shims are skipped when its installs are looked at directly: a shim only answers for the versions
    pyenv currently selects, and starting one costs ~0.1 s."""
    extra = pyenv_installs(python) if path is None else []
    shims = str(pyenv_root() / "shims") if path is None else None
    seen, found = set(), []
    for folder in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if not folder or folder.rstrip("/") == shims:
            continue
        candidate = os.path.join(folder, f"python{python}")
        real = os.path.realpath(candidate)
        if real in seen or not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            continue
        seen.add(real)
        found.append(candidate)
    for candidate in extra:
        if os.path.realpath(candidate) not in seen:
            seen.add(os.path.realpath(candidate))
            found.append(candidate)
    return found


_found: dict[tuple, Interpreter | None] = {}


def find_local_python(python: str, arch: str, path: str | None = None) -> Interpreter | None:
    """The first working interpreter of exactly this version on this Lambda architecture, or None.
    Remembered for the process, per PATH and pyenv root (each probe starts an interpreter)."""
    key = (python, arch, path if path is not None else os.environ.get("PATH", ""), str(pyenv_root()))
    machine = MACHINE.get(arch, arch)
    if path is None and python == "%d.%d" % sys.version_info[:2] and machine == platform.machine():
        return Interpreter(Path(sys.executable), python, machine)  # this very interpreter (-I -S keeps its venv out)
    if key not in _found:
        _found[key] = next((found for candidate in candidates(python, path) if (found := probe(candidate))
                            and found.python == python and found.machine == machine), None)  # fmt: skip
    return _found[key]
