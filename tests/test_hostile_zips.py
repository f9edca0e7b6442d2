"""Hostile layer zips: every trick is refused with one clear line, and nothing lands outside a private dir.

Zips are forged in-process (cheaply: bombs are a few MB that *claim* hundreds of MB). Each case is
checked against layerbuild.util.safezip directly and then through every CLI command that reads layer
zips (audit, stack, test, invoke), as those commands exist.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
import reliability_figures
from conftest import tree_snapshot

from layerbuild.util.safezip import (
    MAX_TOTAL_BYTES,
    UnsafeZipError,
    extract,
    open_layer_zip,
)

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")

# --- forging -----------------------------------------------------------------------------------


def zip_bytes(entries) -> bytes:
    """entries: (name, data) for files, (name, data, 'link') for symlinks, (name, None) for dirs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            name, data = entry[0], entry[1]
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            if len(entry) > 2 and entry[2] == "link":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif data is None:
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                data = b""
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def patch_sizes(data: bytes, file_size: int, compress_size: int | None = None, central_only=True) -> bytes:
    """Rewrite the sizes every central-directory record claims (and optionally the local headers)."""
    out = bytearray(data)
    offset = out.find(b"PK\x01\x02")
    while offset >= 0:
        if compress_size is not None:
            struct.pack_into("<I", out, offset + 20, compress_size)
        struct.pack_into("<I", out, offset + 24, file_size)
        offset = out.find(b"PK\x01\x02", offset + 4)
    if not central_only:
        offset = out.find(b"PK\x03\x04")
        while offset >= 0:
            struct.pack_into("<I", out, offset + 22, file_size)
            offset = out.find(b"PK\x03\x04", offset + 4)
    return bytes(out)


def zeros_bomb(megabytes: int) -> bytes:
    """A genuine deflate bomb: `megabytes` MB of zeros in one entry (~1000:1), streamed to keep memory flat."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("python/zeros.bin", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w") as handle:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                handle.write(block)
    return buffer.getvalue()


def stored_claiming(total_claim_mb: int, entries: int = 3, real_mb: int = 2) -> bytes:
    """Stored (uncompressed) entries whose central directory claims total_claim_mb: ratio under the cap,
    total over it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(entries):
            archive.writestr(f"python/blob{index}.bin", bytes(real_mb << 20))
    return patch_sizes(buffer.getvalue(), (total_claim_mb << 20) // entries)


def nul_name_zip() -> bytes:
    raw = zip_bytes([("python/ok.py", b"x = 1\n"), ("python/aX../../../evil.py", b"boom\n")])
    return raw.replace(b"python/aX../../../evil.py", b"python/a\x00../../../evil.py")


# name -> (zip bytes factory, words the one-line message must contain)
CASES = {
    "dotdot": (lambda: zip_bytes([("python/ok.py", b""), ("python/../../evil.py", b"boom")]), ["climbs out", ".."]),
    "dotdot-backslash": (lambda: zip_bytes([("python\\..\\..\\evil.py", b"boom")]), ["climbs out"]),
    "absolute": (lambda: zip_bytes([("/tmp/layerbuild-evil-absolute.py", b"boom")]), ["absolute path"]),
    "drive-letter": (lambda: zip_bytes([("C:/evil.py", b"boom")]), ["absolute path"]),
    "symlink-absolute": (lambda: zip_bytes([("python/etc", b"/etc", "link")]), ["symlink", "outside the layer", "/etc"]),
    "symlink-relative": (lambda: zip_bytes([("python/up", b"../../..", "link")]), ["symlink", "outside the layer"]),
    "symlink-deep-relative": (lambda: zip_bytes([("python/a/b/up", b"../../../../x", "link")]), ["symlink", "outside"]),
    "duplicate": (lambda: zip_bytes([("python/m.py", b"a"), ("python/m.py", b"b")]), ["appears twice"]),
    "duplicate-normalised": (lambda: zip_bytes([("python/m.py", b"a"), ("python/./m.py", b"b")]), ["appears twice"]),
    "truncated": (lambda: zip_bytes([("python/m.py", b"x" * 5000)])[:-30], ["not a zip", "truncated"]),
    "not-a-zip": (lambda: b"#!/bin/sh\necho this is a shell script named .zip\n", ["not a zip"]),
    "empty-file": (lambda: b"", ["not a zip"]),
    "ratio-bomb": (lambda: zeros_bomb(48), ["zip bomb", "200:1"]),
    "total-size-bomb": (lambda: stored_claiming(600), ["unzips to more than", "zip bomb"]),
    "nul-in-name": (nul_name_zip, ["NUL"]),
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (factory, _) in CASES.items():
        path = folder / f"{name}.zip"
        path.write_bytes(factory())
        paths[name] = path
    return paths


def assert_one_line(message: str, words) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    lowered = message.lower()
    assert any(w.lower() in lowered for w in words), (message, words)


@pytest.mark.parametrize("case", sorted(CASES))
def test_safezip_refuses_hostile_zip(hostile_dir, case):
    reliability_figures.count("bad_inputs", detail="hostile zips")
    with pytest.raises(UnsafeZipError) as info:
        open_layer_zip(hostile_dir[case])
    assert str(hostile_dir[case]) in str(info.value)
    assert_one_line(str(info.value), CASES[case][1])


def test_total_size_cap_is_lambda_scale():
    assert 262_144_000 <= MAX_TOTAL_BYTES <= 4 * 262_144_000


def test_forged_small_sizes_cannot_expand_past_the_claim(tmp_path):
    """Central directory claims 1 KiB per entry; the data really inflates to 8 MiB: extraction stops."""
    data = patch_sizes(zeros_bomb(8), 1024, central_only=False)
    path = tmp_path / "forged.zip"
    path.write_bytes(data)
    reliability_figures.count("bad_inputs", detail="hostile zips")
    layer = open_layer_zip(path)  # the headers look harmless...
    dest = tmp_path / "private" / "x"
    with pytest.raises(UnsafeZipError) as info:
        extract(layer, dest)  # ...but the bytes do not match them
    assert_one_line(str(info.value), ["corrupt", "crc", "zip bomb", "truncated"])
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= 1 << 20


def test_symlink_chain_cannot_escape_on_extraction(tmp_path):
    """Each link stays inside the layer on paper, but b -> ../.. makes a -> b/../x point above the root."""
    data = zip_bytes([
        ("python/sub/b", b"../..", "link"),
        ("python/sub/a", b"b/../escaped", "link"),
    ])  # fmt: skip
    path = tmp_path / "chain.zip"
    path.write_bytes(data)
    reliability_figures.count("bad_inputs", detail="hostile zips")
    dest = tmp_path / "private" / "layer"
    with pytest.raises(UnsafeZipError) as info:
        open_layer_zip(path).extract_to(dest)
    assert_one_line(str(info.value), ["outside"])
    assert not any(p.is_symlink() and not p.resolve().is_relative_to(dest.resolve()) for p in dest.rglob("*"))


def test_symlink_then_directory_of_same_name_is_refused_cleanly(tmp_path):
    """A link entry followed by files through it whose parents do not exist yet: one line, no OSError."""
    data = zip_bytes([
        ("python/a", b"b/../c", "link"),
        ("python/a/file.py", b"x"),
        ("python/b", None),
    ])  # fmt: skip
    path = tmp_path / "order.zip"
    path.write_bytes(data)
    reliability_figures.count("bad_inputs", detail="hostile zips")
    dest = tmp_path / "private" / "layer"
    try:
        open_layer_zip(path).extract_to(dest)
    except UnsafeZipError as exc:
        assert_one_line(str(exc), [str(path)])
    for p in (tmp_path / "private").rglob("*"):
        assert p.resolve().is_relative_to(dest.resolve()), p


def test_inner_symlinks_and_good_files_extract_inside_dest(tmp_path):
    data = zip_bytes([
        ("python/", None),
        ("python/pkg/__init__.py", b"VALUE = 1\n"),
        ("python/alias", b"pkg", "link"),
        ("lib/libx.so.1", b"\x7fELF"),
        ("lib/libx.so", b"libx.so.1", "link"),
    ])  # fmt: skip
    path = tmp_path / "good.zip"
    path.write_bytes(data)
    canary = tmp_path / "private"
    dest = canary / "layer"
    open_layer_zip(path).extract_to(dest)
    assert (dest / "python/alias/__init__.py").read_bytes() == b"VALUE = 1\n"
    assert os.readlink(dest / "lib/libx.so") == "libx.so.1"
    assert sorted(p.name for p in canary.iterdir()) == ["layer"]


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-relative", "ratio-bomb"])
def test_extraction_of_refused_zip_writes_nothing(hostile_dir, tmp_path, case):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("untouched")
    before = tree_snapshot(canary)
    with pytest.raises(UnsafeZipError):
        extract(open_layer_zip(hostile_dir[case]), canary / "dest")
    assert tree_snapshot(canary) == before
    assert not Path("/tmp/layerbuild-evil-absolute.py").exists()


# --- fuzzing: damaged bytes of a real layer zip -------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GOOD_LAYER = zip_bytes([
    ("python/", None),
    ("python/pkg/__init__.py", b"VALUE = 1\n" * 50),
    ("python/pkg/data.txt", bytes(range(256)) * 8),
    ("python/alias", b"pkg", "link"),
    ("lib/libx.so.1", b"\x7fELF" + bytes(300)),
])  # fmt: skip


@st.composite
def damaged_layers(draw):
    data = bytearray(GOOD_LAYER)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "splice"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at: at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        if not data:
            break
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          database=None)  # fmt: skip
@given(damaged_layers())
def test_damaged_zip_is_read_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "damaged.zip"
    path.write_bytes(data)
    reliability_figures.count("bad_inputs", detail="damaged zips (fuzzed)")
    private = tmp_path / "private"
    dest = private / f"x{len(list(private.glob('x*'))) if private.exists() else 0}"
    try:
        layer = open_layer_zip(path)
        for entry in layer.files:
            if not entry.is_symlink:
                layer.read(entry.name, limit=1 << 20)
        layer.extract_to(dest)
    except UnsafeZipError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
    for written in private.rglob("*") if private.exists() else []:
        assert written.resolve().is_relative_to(private.resolve()) or written.is_symlink(), written


# --- through the CLI: audit, stack, test, invoke ----------------------------------------------

import sys  # noqa: E402
import tempfile  # noqa: E402

from conftest import HOST_PYTHON  # noqa: E402

CLI_CASES = sorted(CASES) + ["forged-sizes", "symlink-chain"]


@pytest.fixture(scope="module")
def cli_zips(hostile_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-hostile")
    paths = dict(hostile_dir)
    paths["forged-sizes"] = folder / "forged-sizes.zip"
    paths["forged-sizes"].write_bytes(patch_sizes(zeros_bomb(8), 1024, central_only=False))
    paths["symlink-chain"] = folder / "symlink-chain.zip"
    paths["symlink-chain"].write_bytes(zip_bytes([("python/sub/b", b"../..", "link"), ("python/sub/a", b"b/../escaped", "link"),
                                                  ("python/mod.py", b"X = 1\n")]))  # fmt: skip
    return paths


def command_lines(zip_path: Path, work: Path) -> dict[str, list[str]]:
    (work / "event.json").write_text("{}")
    (work / "code").mkdir(exist_ok=True)
    (work / "code" / "handler.py").write_text("def main(event, context):\n    return 'ok'\n")
    target = ["--python", HOST_PYTHON, "--arch", "x86_64"]
    return {
        "audit": ["audit", str(zip_path), *target],
        "stack": ["stack", str(zip_path)],
        # --where local with the host's Python: the zip is checked whatever the machine has.
        "test": ["test", str(zip_path), *target, "--where", "local", "--import", "mod"],
        "invoke": ["invoke", "handler.main", "--layer", str(zip_path), "--event", str(work / "event.json"),
                   "--code", str(work / "code"), "--python", HOST_PYTHON],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["audit", "stack", "test", "invoke"])
def test_cli_commands_refuse_hostile_zips_in_one_line(cli_zips, runner, tmp_path, monkeypatch, command):
    from layerbuild.cli.main import main

    assert command in main.list_commands(None)  # commands load lazily (cli.LAZY_COMMANDS)
    private_tmp = tmp_path / "private-tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # every temp dir the command makes lands here
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("untouched")
    before = tree_snapshot(canary)
    env = {"TMPDIR": str(private_tmp), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    work = tmp_path / "work"
    work.mkdir()
    for case in CLI_CASES:
        args = command_lines(cli_zips[case], work)[command]
        result = runner.invoke(main, args, env=env, catch_exceptions=False)
        reliability_figures.count("bad_inputs", detail=f"hostile zips through `{command}`")
        lines = result.stderr.strip().splitlines()
        if command == "stack" and case == "forged-sizes":
            # stack sizes layers from their headers and reads no data: a lying header is not seen.
            assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
            continue
        assert result.exit_code == 1, (case, result.exit_code, result.output)
        assert lines and lines[-1].startswith("error: ") and str(cli_zips[case]) in lines[-1], (case, result.stderr)
        assert "Traceback" not in result.output, (case, result.output)
        assert tree_snapshot(canary) == before, case
        assert list(private_tmp.iterdir()) == [], (case, list(private_tmp.iterdir()))  # cleaned up
        assert not Path("/tmp/layerbuild-evil-absolute.py").exists()
        assert not (cli_zips[case].parent.parent / "evil.py").exists() and not (tmp_path / "evil.py").exists()


def test_symlink_chains_and_loops_are_refused_before_extraction(tmp_path):
    chain = tmp_path / "chain.zip"
    chain.write_bytes(zip_bytes([("python/sub/b", b"../..", "link"), ("python/sub/a", b"b/../escaped", "link")]))
    loop = tmp_path / "loop.zip"
    loop.write_bytes(zip_bytes([("python/x", b"y", "link"), ("python/y", b"x", "link")]))
    fine = tmp_path / "fine.zip"
    fine.write_bytes(zip_bytes([("lib/libx.so.1.2", b"\x7fELF"), ("lib/libx.so.1", b"libx.so.1.2", "link"),
                                ("lib/libx.so", b"libx.so.1", "link"), ("python/up", b"../lib", "link")]))  # fmt: skip
    reliability_figures.count("bad_inputs", 2, detail="hostile zips")
    with pytest.raises(UnsafeZipError, match="resolves outside the layer through other links"):
        open_layer_zip(chain)
    with pytest.raises(UnsafeZipError, match="is a loop"):
        open_layer_zip(loop)
    assert {e.name for e in open_layer_zip(fine).entries if e.is_symlink} == {"lib/libx.so.1", "lib/libx.so", "python/up"}
