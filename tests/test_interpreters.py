"""Local interpreters: PATH first, then pyenv's own installs (whose shims answer only when selected)."""

import os

from layerbuild.build import bytecode
from layerbuild.verify.interpreters import find_local_python, pyenv_installs


def fake_install(root, version, patch, probe_version=None):
    folder = root / "versions" / f"{version}.{patch}" / "bin"
    folder.mkdir(parents=True)
    exe = folder / f"python{version}"
    exe.write_text(f"#!/bin/sh\necho '{probe_version or version} x86_64 {exe}'\n")
    os.chmod(exe, 0o755)
    return exe


def test_pyenv_installs_are_found_without_a_shim(tmp_path, monkeypatch):
    root = tmp_path / "pyenv"
    fake_install(root, "3.10", 4)
    newest = fake_install(root, "3.10", 13)
    (root / "versions" / "3.10.0rc1" / "bin").mkdir(parents=True)  # pre-releases are not candidates
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert pyenv_installs("3.10") == [str(newest), str(root / "versions" / "3.10.4" / "bin" / "python3.10")]
    found = find_local_python("3.10", "x86_64")
    assert found is not None and str(found.executable) == str(newest)
    # The smoke test and the bytecode compiler agree on where interpreters come from.
    bytecode.find_interpreter.cache_clear()
    assert bytecode.find_interpreter("3.10").executable == str(newest)
    bytecode.find_interpreter.cache_clear()


def test_an_explicit_path_is_searched_alone(tmp_path, monkeypatch):
    root = tmp_path / "pyenv"
    fake_install(root, "3.10", 4)
    monkeypatch.setenv("PYENV_ROOT", str(root))
    assert find_local_python("3.10", "x86_64", path=str(tmp_path / "empty")) is None


def test_a_lying_install_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "pyenv"
    fake_install(root, "3.13", 1, probe_version="3.12")
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_local_python("3.13", "x86_64") is None
