"""Where builds keep their scratch trees: /dev/shm when it has room, else the temp dir; the user's choice wins."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from layerbuild.build.pipeline import build_target
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import make_target
from layerbuild.util import scratch

GIB = 1 << 30
ROOMY = scratch.RamDir(is_tmpfs=True, writable=True, free_bytes=12 * GIB, available_memory=20 * GIB)


@pytest.mark.parametrize(
    "environ, ram, expected",
    [
        ({}, ROOMY, (scratch.RAM_DIR, "memory")),
        ({"TMPDIR": "/var/tmp"}, ROOMY, (Path("/sys-temp"), "TMPDIR")),  # the user chose, as for any program
        ({scratch.SCRATCH_ENV: "/fast", "TMPDIR": "/var/tmp"}, ROOMY, (Path("/fast"), scratch.SCRATCH_ENV)),
        ({}, scratch.RamDir(True, True, 64 << 20, 20 * GIB), (Path("/sys-temp"), "temp")),  # Docker's default /dev/shm
        ({}, scratch.RamDir(True, True, 12 * GIB, 1 * GIB), (Path("/sys-temp"), "temp")),  # memory is short
        ({}, scratch.RamDir(True, False, 12 * GIB, 20 * GIB), (Path("/sys-temp"), "temp")),  # not ours to write
        ({}, scratch.RamDir(False, True, 12 * GIB, 20 * GIB), (Path("/sys-temp"), "temp")),  # a disk, not tmpfs
        ({}, None, (Path("/sys-temp"), "temp")),  # no /dev/shm (macOS)
        ({scratch.SCRATCH_ENV: "  "}, ROOMY, (scratch.RAM_DIR, "memory")),  # blank is unset
    ],
)
def test_choice_of_scratch_directory(environ, ram, expected):
    assert scratch.choose(environ, ram, "/sys-temp") == expected


def recipe(tmp_path):
    return parse_recipe({"name": "scr", "packages": ["six"], "bytecode": "none"}, str(tmp_path / "scr.yaml"))


def test_a_scratch_directory_that_is_not_one_is_a_one_line_error(tmp_path):
    (tmp_path / "scr.yaml").write_text("name: scr\npackages: [six]\n")
    env = dict(os.environ, **{scratch.SCRATCH_ENV: str(tmp_path / "missing")})
    proc = subprocess.run([sys.executable, "-m", "layerbuild", "build", str(tmp_path / "scr.yaml"), "--out", str(tmp_path / "dist")],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {scratch.SCRATCH_ENV}: {str(tmp_path / 'missing')!r} is not a writable directory "
        "(unset it to let layerbuild choose, or name an existing directory)"
    ]
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


@pytest.mark.network
def test_builds_work_in_the_chosen_directory_and_clean_up_after_killed_ones(tmp_path, monkeypatch):
    chosen = tmp_path / "scratch"
    chosen.mkdir()
    monkeypatch.setenv(scratch.SCRATCH_ENV, str(chosen))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = chosen / f"layerbuild-scr-python3.11-x86_64-{dead.pid}-abc123"  # a killed build's scratch tree
    (leftover / "layer").mkdir(parents=True)
    seen = []

    def progress(target, message):
        seen.append(sorted(p.name for p in chosen.iterdir()))

    outcome = build_target(recipe(tmp_path), make_target("3.11", "x86_64"), out_dir=tmp_path / "dist", progress=progress,
                           use_cache=False)  # fmt: skip
    assert outcome.zip_path.is_file()
    assert any(names and all(n.startswith(f"layerbuild-scr-python3.11-x86_64-{os.getpid()}-") for n in names) for names in seen)
    assert not leftover.exists() and not any(chosen.iterdir())  # the leftover went, and so did this build's tree


@pytest.mark.network
def test_by_default_a_build_works_in_memory_when_there_is_room(tmp_path, monkeypatch):
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.delenv(scratch.SCRATCH_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)
    if scratch.choose({}, scratch._ram_dir(), "/tmp")[1] != "memory":
        pytest.skip("this machine's /dev/shm is not a roomy tmpfs")
    seen = []
    prefix = f"layerbuild-scr-python3.11-x86_64-{os.getpid()}-"
    progress = lambda target, message: seen.extend(p.name for p in scratch.RAM_DIR.glob(prefix + "*"))  # noqa: E731
    build_target(recipe(tmp_path), make_target("3.11", "x86_64"), out_dir=tmp_path / "dist", progress=progress, use_cache=False)
    assert seen, "the build's scratch tree was not in /dev/shm"
    assert not list(scratch.RAM_DIR.glob(prefix + "*"))


@pytest.fixture
def tiny_scratch(tmp_path):
    """A real 8 MB tmpfs (needs root, as in CI): room to resolve, not to unpack Pillow."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.network
def test_a_full_scratch_directory_is_a_one_line_error_that_names_it(tmp_path, tiny_scratch):
    # Pillow's head start unpacks while uv resolves: whether uv or the unpacking meets the full disk first is down to
    # timing, and either way the message is the same (a full disk under uv is reported as the machine's, not uv's).
    (tmp_path / "big.yaml").write_text("name: big\npackages: ['pillow>=12']\npython: ['3.11']\n")
    env = dict(os.environ, **{scratch.SCRATCH_ENV: str(tiny_scratch)})
    proc = subprocess.run([sys.executable, "-m", "layerbuild", "build", str(tmp_path / "big.yaml"), "--out", str(tmp_path / "dist")],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: cannot build big-python3.11-x86_64: No space left on device") and "Traceback" not in proc.stderr
    assert f"the build works in {tiny_scratch} (set {scratch.SCRATCH_ENV} to use another directory)" in line
    assert not list(tiny_scratch.iterdir())  # its scratch tree went
    assert not [p for p in (tmp_path / "dist").iterdir() if p.suffix in (".zip", ".json", ".tmp")]


def test_locking_in_a_full_temp_directory_is_a_one_line_error(tmp_path, tiny_scratch, invoke, monkeypatch):
    for block in (65536, 4096):  # fill the 8 MB tmpfs to the last page
        with open(tiny_scratch / f"filler-{block}", "wb", buffering=0) as handle:
            try:
                for _ in range(10_000):
                    handle.write(b"\0" * block)
            except OSError:
                pass
    # Python's own choice of temp directory skips a full one; a user's TMPDIR on a disk that fills up mid-lock does not.
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_scratch))
    (tmp_path / "demo.yaml").write_text("name: demo\npackages: ['six']\npython: ['3.11']\n")
    result = invoke("lock", tmp_path / "demo.yaml")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: cannot lock demo for python3.11-x86_64: No space left on device") and "Traceback" not in result.stderr
    assert f"locking works in {tiny_scratch} (set TMPDIR to use another directory)" in line
    assert not (tmp_path / "demo.lock").exists() and not list(tiny_scratch.glob("layerbuild-lock-*"))


def test_a_disk_that_filled_up_under_uv_is_reported_as_the_machines():
    from layerbuild.backends.wheels.uv import raise_if_disk_full

    stderr = "error: failed to write to file `/scratch/resolve/.tmpQ4PjRG`: No space left on device (os error 28)\n"
    with pytest.raises(OSError) as raised:
        raise_if_disk_full(stderr)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/scratch/resolve/.tmpQ4PjRG"
    raise_if_disk_full("error: No solution found when resolving dependencies\n")  # anything else: not this
