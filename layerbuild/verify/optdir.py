"""A private, read-only /opt-like directory holding one or more extracted layers.

Layers are extracted (through safezip's vetting) in the order given into one directory, so a later
layer's file replaces an earlier one's at the same path, as Lambda's /opt merge does. The tree is
then made read-only (chmod a-w), and when we are root - whom permission bits do not stop - the child
process also gets a read-only bind mount of it in a private mount namespace (unshare), like /opt on
Lambda.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from layerbuild.util.safezip import open_layer_zip


def _chmod_tree(root: Path, writable: bool) -> None:
    for folder, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            mode = os.lstat(path).st_mode
            os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))
        if writable:
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
    os.chmod(root, 0o755 if writable else 0o555)
    if not writable:
        for folder, dirs, _files in os.walk(root, topdown=False):
            for name in dirs:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o555)


@contextmanager
def layers_extracted(zip_paths, prefix: str = "layerbuild-opt-"):
    """Yield the path of a read-only directory holding the layers merged in order; removed afterwards."""
    layers = [open_layer_zip(Path(p)) for p in zip_paths]  # vet every zip before writing anything
    work = Path(tempfile.mkdtemp(prefix=prefix))
    root = work / "opt"
    try:
        root.mkdir()
        for layer in layers:
            layer.extract_to(root)
        _chmod_tree(root, writable=False)
        yield root
    finally:
        if root.exists():
            _chmod_tree(root, writable=True)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def read_only_tree(root: Path):
    """root read-only for a child process started meanwhile with read_only_command: a read-only bind mount
    when we may make one (root, whom permission bits do not stop), else chmod a-w, undone on the way out."""
    if can_bind_read_only():
        yield root
        return
    _chmod_tree(root, writable=False)
    try:
        yield root
    finally:
        _chmod_tree(root, writable=True)


_UNSHARE_OK: bool | None = None


def can_bind_read_only() -> bool:
    """True when `unshare -m` + `mount --bind -o ro` work here (root with CAP_SYS_ADMIN); probed once."""
    global _UNSHARE_OK
    if _UNSHARE_OK is None:
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
            _UNSHARE_OK = False
        else:
            try:
                done = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
                _UNSHARE_OK = done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _UNSHARE_OK = False
    return _UNSHARE_OK


# Bind the layer directory read-only over itself in a private mount namespace, then run the command.
_RO_WRAPPER = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def read_only_command(root: Path, argv: list[str]) -> list[str]:
    """argv wrapped so that root cannot write below root either (when the machine lets us)."""
    if not can_bind_read_only():
        return argv  # not root: chmod a-w already stops the child
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _RO_WRAPPER, "sh", str(root), *argv]
