"""#16 "Trust nothing that comes back": safe output, bounded wheel unpacking, strict manifests and JSON, invoke's
process group (findings 10, 12, 15, 16, 18, 21). Everything local or on 127.0.0.1, bounded in time."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import threading
import time
import tracemalloc
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import reliability_figures
from conftest import tree_snapshot
from runtime_layers import make_layer

from layerbuild.backends.distinfo import top_level_modules
from layerbuild.backends.wheels import install as wheelinstall
from layerbuild.util.safetext import JsonInputError, loads, printable
from layerbuild.verify.interpreters import find_local_python

TITLE = "\x1b]0;PWNED\x07"  # sets the terminal's title when printed raw
GOOD_MANIFEST = {"name": "demo", "runtime": "python3.12", "python": "3.12", "architecture": "x86_64", "backend": "wheels",
                 "packages": [{"name": "demo", "version": "1.0"}], "file_count": 1, "zipped_bytes": 1,
                 "unzipped_bytes": 1, "sha256": "0" * 64, "code_sha256": "", "zip": "demo.zip",
                 "compatible_runtimes": ["python3.12"]}  # fmt: skip
needs_py311 = pytest.mark.skipif(find_local_python("3.11", "x86_64") is None, reason="no local python3.11 for x86_64")


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]  # not build progress
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# --- finding 10: terminal escapes ----------------------------------------------------------------


def test_printable_escapes_controls_and_bidi_but_keeps_letters():
    """#16 finding 10: ESC, BEL, DEL, C1 and bidi overrides are shown as escapes; Korean and accents stay."""
    assert printable(f"python/{TITLE}.py") == "python/\\x1b]0;PWNED\\x07.py"
    assert printable("a\x7fb\x9bc\u202ed\u2066e\u200bf") == "a\\x7fb\\x9bc\\u202ed\\u2066e\\u200bf"
    assert printable("python/한국어/café.py") == "python/한국어/café.py"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines" and printable("two\nlines") == "two\\x0alines"


def test_audit_shows_hostile_entry_names_escaped(invoke, tmp_path):
    """#16 finding 10: an entry name carrying an OSC title sequence or a bidi override reaches the terminal escaped."""
    reliability_figures.count("bad_inputs", 2, detail="terminal escapes in zip entry names")
    names = [f"python/{TITLE}.py", "python/evil\u202eyp.py", "python/한국어.py"]
    path = make_layer(tmp_path / "esc.zip", {name: "x = 1\n" for name in names})
    result = invoke("audit", path, "--python", "3.12", "--arch", "x86_64")
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "\\x1b]0;PWNED\\x07.py" in result.output and "evil\\u202eyp.py" in result.output
    assert "한국어.py" in result.output  # letters of any script are shown as they are


def test_stack_shows_hostile_entry_names_escaped(invoke, tmp_path):
    """#16 finding 10: the same names through `stack` (overridden paths, shadowed packages)."""
    reliability_figures.count("bad_inputs", detail="terminal escapes in zip entry names")
    files = {f"python/{TITLE}/__init__.py": "", f"python/{TITLE}.py": ""}
    first, second = make_layer(tmp_path / "a.zip", files), make_layer(tmp_path / "b.zip", files)
    result = invoke("stack", first, second)
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b]0;PWNED\\x07" in result.output


@needs_py311
def test_test_command_shows_module_names_and_import_errors_escaped(invoke, tmp_path):
    """#16 finding 10: `test` prints module names from the layer's top_level.txt and its import errors escaped."""
    reliability_figures.count("bad_inputs", detail="terminal escapes in import errors")
    path = make_layer(tmp_path / "evil.zip", {"python/evil/__init__.py": f"raise ImportError({TITLE!r})\n",
                                              "python/evil-1.0.dist-info/top_level.txt": "evil\n"})  # fmt: skip
    result = invoke("test", path, "--python", "3.11", "--arch", "x86_64", "--where", "local")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\\x1b]0;PWNED\\x07" in result.output


def test_tables_show_server_fields_escaped(capsys):
    """#16 finding 10: the tables klayers-lookup and publish print hold what servers answered: shown escaped."""
    reliability_figures.count("bad_inputs", detail="terminal escapes in Klayers fields")
    from layerbuild.cli.output import print_table

    print_table([["numpy", f"1.0{TITLE}", "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-numpy:1"]],
                ["PACKAGE", "VERSION", "ARN"])  # fmt: skip
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "1.0\\x1b]0;PWNED\\x07" in out


class _ReasonHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404, f"Not Found{TITLE}\x1b[2J")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_http_reason_phrase_with_escapes_is_shown_escaped(invoke, monkeypatch):
    """#16 finding 10: a server's reason phrase (ESC ] title, ESC [2J clear screen) reaches the error line escaped."""
    reliability_figures.count("faults", detail="escape sequences in an HTTP reason phrase")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReasonHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", f"http://127.0.0.1:{server.server_address[1]}")
        result = invoke("klayers-lookup", "us-east-1", "3.12")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    line = one_line(result)
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "HTTP 404 Not Found\\x1b]0;PWNED\\x07\\x1b[2J" in line


# --- finding 12: bounded wheel unpacking -----------------------------------------------------------


def wheel_bytes(name: str, members: dict[str, bytes | int], record: bytes | None = None) -> bytes:
    """A wheel NAME-1.0; an int member is that many zero bytes, deflated as it is written (never held whole)."""
    buffer = io.BytesIO()
    dist_info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if isinstance(data, int):
                with archive.open(info, "w") as handle:
                    block = bytes(1 << 20)
                    for offset in range(0, data, len(block)):
                        handle.write(block[: data - offset])
            else:
                archive.writestr(info, data)
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", record if record is not None else f"{dist_info}/RECORD,,\n".encode())
    return buffer.getvalue()


def declare_size(data: bytes, member: str, file_size: int) -> bytes:
    """The wheel with one member's central-directory record claiming file_size (its data unchanged)."""
    out = bytearray(data)
    offset = out.find(b"PK\x01\x02")
    while offset >= 0:
        name_length = struct.unpack_from("<H", out, offset + 28)[0]
        if bytes(out[offset + 46:offset + 46 + name_length]) == member.encode():
            struct.pack_into("<I", out, offset + 24, file_size)
        offset = out.find(b"PK\x01\x02", offset + 4)
    return bytes(out)


def write_wheel(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    path.write_bytes(data)
    return path


def assert_refused_and_clean(tmp_path: Path, wheel: Path, words: list[str]) -> None:
    site = tmp_path / "install" / "python"
    with pytest.raises(wheelinstall.UnsafeWheelError) as caught:
        wheelinstall.install_wheels([wheel], site)
    message = caught.value.message
    assert message.startswith(f"{wheel.name}: ") and "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message
    written = [p for p in (tmp_path / "install").rglob("*") if p.is_file()]
    assert written == [], written  # stopped before writing, or removed what it wrote


def test_a_small_wheel_that_inflates_to_300_mb_is_refused_before_writing(tmp_path):
    """#16 finding 12: a ~300 KB wheel whose one member inflates to 300 MB (zeros) writes nothing and names the member."""
    reliability_figures.count("bad_inputs", detail="wheel bombs")
    data = wheel_bytes("bomb", {"bomb/__init__.py": b"", "bomb/zeros.bin": 300 << 20})
    assert len(data) < 400_000
    wheel = write_wheel(tmp_path / "wheels", "bomb", data)
    assert_refused_and_clean(tmp_path, wheel, ["member 'bomb/zeros.bin'", "zip bomb", "nothing was installed"])


def test_build_refuses_a_wheel_bomb_from_the_index_in_one_line(invoke, tmp_path, monkeypatch, write_recipe):
    """#16 finding 12: `build` with a ~300 KB wheel inflating to 300 MB from a 127.0.0.1 index: one line naming the
    wheel and the member, nothing in dist/, nothing left in the scratch directory."""
    from faultproxy import PackageIndex

    reliability_figures.count("bad_inputs", detail="wheel bombs through build")
    data = wheel_bytes("demo_bomb", {"demo_bomb/__init__.py": b"", "demo_bomb/zeros.bin": 300 << 20})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("LAYERBUILD_SCRATCH_DIR", str(scratch))
    with PackageIndex() as index:
        index.projects["demo-bomb"] = {"demo_bomb-1.0-py3-none-any.whl": data}
        recipe = write_recipe(f"name: bomb\npackages: ['demo-bomb']\npython: ['3.11']\nindex_url: {index.simple_url}\n",
                              filename="bomb.yaml")  # fmt: skip
        result = invoke("build", recipe, "--out", tmp_path / "dist", "--no-verify")
    assert result.exit_code == 1
    line = one_line(result)
    assert "demo_bomb-1.0-py3-none-any.whl: member 'demo_bomb/zeros.bin' expands" in line, line
    assert tree_snapshot(tmp_path / "dist") == {} and list(scratch.iterdir()) == []


def test_wheels_whose_members_total_over_the_ceiling_are_refused_before_writing(tmp_path):
    """#16 finding 12: members each small enough (7.5 MB, under the ratio rule) but over 524,288,000 bytes in all."""
    reliability_figures.count("bad_inputs", detail="wheel bombs")
    block = 15 << 19  # 7.5 MB
    count = wheelinstall.MAX_UNPACKED_BYTES // block + 1
    assert wheelinstall.MAX_UNPACKED_BYTES == 2 * 262_144_000
    data = wheel_bytes("many", {f"many/part{i:03d}.bin": block for i in range(count)})
    wheel = write_wheel(tmp_path / "wheels", "many", data)
    assert_refused_and_clean(tmp_path, wheel, [f"member 'many/part{count - 1:03d}.bin'", "524,288,000 bytes"])


def test_wheels_unpacked_ahead_count_towards_the_ceiling(tmp_path):
    """#16 finding 12: wheels unpacked while uv resolved (each under the ceiling) still count: the one that takes the
    total past it is named, before the remaining wheels are written."""
    reliability_figures.count("bad_inputs", detail="wheel bombs")
    ahead = {}
    for name in ("aaa", "bbb"):
        path = write_wheel(tmp_path / "wheels", name, wheel_bytes(name, {f"{name}/__init__.py": b""}))
        ahead[path.name] = wheelinstall.Unpacked(path, tmp_path / f".unpack-{path.name}", {}, 300 << 20)
    last = write_wheel(tmp_path / "wheels", "ccc", wheel_bytes("ccc", {"ccc/__init__.py": b""}))
    site = tmp_path / "install" / "python"
    with pytest.raises(wheelinstall.UnsafeWheelError, match=r"^bbb-1.0-py3-none-any.whl: takes the wheels past 524,288,000"):
        wheelinstall.install_wheels([*(tmp_path / "wheels" / n for n in ahead), last], site, ahead)
    assert not (tmp_path / "install" / ".unpack-ccc-1.0-py3-none-any.whl").exists()


def test_wheels_unpacking_side_by_side_share_the_ceiling(tmp_path):
    """#16 (re-check): each wheel unpacked as it arrived was checked alone, so three wheels under the ceiling
    each wrote 1 GB together. They share one budget now: the one that would pass it writes nothing."""
    reliability_figures.count("bad_inputs", detail="wheel bombs")
    budget = wheelinstall.UnpackBudget(ceiling=5 << 20)  # the real one is 524,288,000 bytes
    first = write_wheel(tmp_path / "wheels", "firstw", wheel_bytes("firstw", {"firstw/data.bin": 3 << 20}))
    second = write_wheel(tmp_path / "wheels", "secondw", wheel_bytes("secondw", {"secondw/data.bin": 3 << 20}))
    (done,) = wheelinstall.unpack_wheels([first], tmp_path / "pipeline", budget=budget)
    assert done.declared_bytes >= 3 << 20
    with pytest.raises(wheelinstall.UnsafeWheelError, match=r"^secondw-1.0-py3-none-any.whl: member 'secondw/data.bin' takes the wheels past 5,242,880 bytes"):
        wheelinstall.unpack_wheels([second], tmp_path / "pipeline", budget=budget)
    assert not (tmp_path / "pipeline" / f".unpack-{second.name}").exists()
    written = sum(f.stat().st_size for f in (tmp_path / "pipeline").rglob("*") if f.is_file())
    assert written <= 5 << 20


def test_a_member_whose_header_lies_about_its_size_is_refused_without_inflating_it(tmp_path):
    """#16 finding 12: a member declaring 1,000 bytes that inflates to 64 MB is refused; memory stays small."""
    reliability_figures.count("bad_inputs", detail="wheel bombs")
    data = declare_size(wheel_bytes("liar", {"liar/__init__.py": b"", "liar/data.bin": 64 << 20}), "liar/data.bin", 1000)
    wheel = write_wheel(tmp_path / "wheels", "liar", data)
    tracemalloc.start()
    try:
        assert_refused_and_clean(tmp_path, wheel, ["member 'liar/data.bin'", "inflates past the 1,000 bytes"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak:,} bytes held while refusing"


def test_honest_wheels_still_unpack(tmp_path):
    """#16 finding 12: the bounds leave ordinary wheels alone (a 40 MB member takes the streaming path)."""
    data = wheel_bytes("fine", {"fine/__init__.py": b"X = 1\n", "fine/big.bin": os.urandom(40 << 20)})
    wheel = write_wheel(tmp_path / "wheels", "fine", data)
    site = tmp_path / "install" / "python"
    wheelinstall.install_wheels([wheel], site)
    assert (site / "fine" / "__init__.py").read_bytes() == b"X = 1\n" and (site / "fine" / "big.bin").stat().st_size == 40 << 20


# --- finding 15 and 16: manifests, events, env files -------------------------------------------------


BAD_MANIFESTS = {
    "list": ([], "a JSON object is expected, this is a list"),
    "null": (None, "a JSON object is expected, this is null"),
    "number": (1, "a JSON object is expected, this is a number"),
    "string": ("x", "a JSON object is expected, this is a string"),
    "architecture-list": ({**GOOD_MANIFEST, "architecture": ["x86_64"]}, "field 'architecture' must be x86_64 or arm64, not a list"),
    "name-list": ({**GOOD_MANIFEST, "name": ["a"]}, "field 'name' must be a recipe name"),
    "packages-strings": ({**GOOD_MANIFEST, "packages": ["demo"]}, "field 'packages' must be a list of"),
    "size-bool": ({**GOOD_MANIFEST, "unzipped_bytes": True}, "field 'unzipped_bytes' must be a whole number"),
    "runtimes-number": ({**GOOD_MANIFEST, "compatible_runtimes": 3}, "field 'compatible_runtimes' must be a list of strings"),
}  # fmt: skip


def command_for(command: str, zip_path: Path) -> list[str]:
    return {"audit": ["audit", zip_path], "stack": ["stack", zip_path], "test": ["test", zip_path, "--where", "local"],
            "publish": ["publish", zip_path, "--region", "us-east-1", "--dry-run"]}[command]  # fmt: skip


@pytest.mark.parametrize("command", ["audit", "stack", "test", "publish"])
@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_malformed_manifest_is_one_line_naming_the_file_and_field(invoke, tmp_path, command, case):
    """#16 finding 16: a manifest that is not an object, or has a field of the wrong type, is one line (no exit 70)."""
    reliability_figures.count("bad_inputs", detail="malformed manifests")
    value, words = BAD_MANIFESTS[case]
    path = make_layer(tmp_path / "demo.zip", {"python/demo/__init__.py": ""})
    (tmp_path / "demo.json").write_text(json.dumps(value), encoding="utf-8")
    result = invoke(*command_for(command, path))
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"error: {tmp_path / 'demo.json'}: not a layerbuild manifest") and words in line, line


@pytest.mark.parametrize("command", ["audit", "stack", "test", "publish"])
def test_a_deeply_nested_manifest_is_one_line_naming_the_file(invoke, tmp_path, command):
    """#16 finding 15: 100,000 nested lists in a manifest give one line, not RecursionError's exit 70."""
    reliability_figures.count("bad_inputs", detail="deeply nested JSON")
    path = make_layer(tmp_path / "demo.zip", {"python/demo/__init__.py": ""})
    (tmp_path / "demo.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = invoke(*command_for(command, path))
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"error: {tmp_path / 'demo.json'}: not a layerbuild manifest (nested more than 100 levels deep)")


def test_the_json_loader_bounds_depth_size_and_keys():
    """#16 finding 15: the one loader: depth (whatever the recursion limit), size, NaN and duplicate keys."""
    assert loads('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert loads("[" * 100 + "]" * 100) is not None
    for text, reason in (("[" * 101 + "]" * 101, "nested more than 100 levels deep"),
                         ("[" * 50_000 + "]" * 50_000, "nested more than 100 levels deep"),
                         ('{"a": NaN}', "NaN is not a JSON value"), (b"\xff{}", "not UTF-8"),
                         ('"' + "x" * 100 + '"', "larger than 50 bytes")):  # fmt: skip
        with pytest.raises(JsonInputError, match=reason):
            loads(text, max_bytes=50 if "x" * 100 in str(text) else None)
    with pytest.raises(JsonInputError, match="key 'a' appears twice"):
        loads('{"a": 1, "a": 2}', unique_keys=True)


def test_a_forged_deeply_nested_import_report_is_one_line():
    """#16 finding 15: a layer module printing the import runner's marker with 100,000 nested lists: one line."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.verify import _import_runner
    from layerbuild.verify.venues import parse_runner_output

    reliability_figures.count("bad_inputs", 2, detail="deeply nested JSON")
    for forged in ("[" * 100_000 + "]" * 100_000, "1"):
        with pytest.raises(LayerbuildError, match="did not report"):
            parse_runner_output(f"{_import_runner.MARKER}{forged}\n", "local python3.11", 0)


def test_a_deeply_nested_event_or_env_file_is_one_line_naming_it(invoke, tmp_path):
    """#16 finding 15: `invoke --event` and `--env-file` with 100,000 nested lists: one line naming the file."""
    reliability_figures.count("bad_inputs", 2, detail="deeply nested JSON")
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return 1\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    event = tmp_path / "event.json"
    event.write_text("{}", encoding="utf-8")
    result = invoke("invoke", "app.handler", "--event", deep, "--code", tmp_path, "--no-credentials")
    assert result.exit_code == 1 and one_line(result) == f"error: --event {deep}: nested more than 100 levels deep"
    result = invoke("invoke", "app.handler", "--event", event, "--env-file", deep, "--code", tmp_path, "--no-credentials")
    assert result.exit_code == 1 and one_line(result).startswith(f"error: --env-file {deep}: nested more than 100 levels deep")


# --- finding 18: RECORD, top_level.txt, scratch directory --------------------------------------------


def test_a_wheel_whose_record_is_not_utf8_is_one_line_naming_the_wheel(tmp_path):
    """#16 finding 18: RECORD in Latin-1 (or with a field over csv's limit) is refused naming the wheel and RECORD,
    nothing left behind."""
    reliability_figures.count("bad_inputs", 2, detail="wheels with unreadable RECORD")
    latin = wheel_bytes("latin", {"latin/__init__.py": b""}, record="latin/caf\xe9.py,,\n".encode("latin-1"))
    wheel = write_wheel(tmp_path / "wheels", "latin", latin)
    assert_refused_and_clean(tmp_path, wheel, ["member 'latin-1.0.dist-info/RECORD'", "RECORD is not UTF-8"])
    huge = wheel_bytes("huge", {"huge/__init__.py": b""}, record=b'"' + b"x" * 200_000 + b'",,\n')
    wheel = write_wheel(tmp_path / "wheels2", "huge", huge)
    assert_refused_and_clean(tmp_path / "second", wheel, ["RECORD is not valid CSV"])


def test_a_huge_module_name_in_top_level_txt_is_ignored(tmp_path):
    """#16 finding 18: a 100,000-character (identifier) name in top_level.txt is no module: no OSError, no huge output."""
    reliability_figures.count("bad_inputs", detail="hostile top_level.txt")
    site = tmp_path / "python"
    (site / "demo").mkdir(parents=True)
    (site / "demo" / "__init__.py").write_text("")
    (site / "demo-1.0.dist-info").mkdir()
    (site / "demo-1.0.dist-info" / "top_level.txt").write_text("demo\n" + "a" * 100_000 + "\nnot-a-name\n\x1b]0;x\x07\n")
    assert top_level_modules(site) == ["demo"]


@needs_py311
def test_test_command_with_a_huge_module_name_in_top_level_txt(invoke, tmp_path):
    """#16 finding 18: `layerbuild test` on a layer whose top_level.txt names a 100,000-character module."""
    reliability_figures.count("bad_inputs", detail="hostile top_level.txt")
    path = make_layer(tmp_path / "huge.zip", {"python/demo/__init__.py": "",
                                              "python/demo-1.0.dist-info/top_level.txt": "demo\n" + "a" * 100_000 + "\n"})
    result = invoke("test", path, "--python", "3.11", "--arch", "x86_64", "--where", "local")
    assert result.exit_code == 0, result.output
    assert len(result.output) < 2000 and "aaaaaaaaaa" not in result.output


def test_a_scratch_directory_where_nothing_can_be_created_is_one_line(invoke, tmp_path, monkeypatch, write_recipe):
    """#16 finding 18: LAYERBUILD_SCRATCH_DIR=/proc (a directory root may 'write', where mkdir fails) is one line."""
    reliability_figures.count("bad_inputs", detail="unusable scratch directory")
    monkeypatch.setenv("LAYERBUILD_SCRATCH_DIR", "/proc")
    recipe = write_recipe(name="scr", packages=["six"], python=["3.11"])
    result = invoke("build", recipe, "--out", tmp_path / "dist")
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith("error: LAYERBUILD_SCRATCH_DIR: '/proc' is not a writable directory"), line
    assert tree_snapshot(tmp_path / "dist") == {}


# --- finding 21: invoke ends the handler's children ---------------------------------------------------


SPAWNER = '''
import os, subprocess, sys

def handler(event, context):
    child = subprocess.Popen(["sleep", "300"])
    with open(event["pid_file"], "w") as handle:
        handle.write(str(child.pid))
    return "spawned"

def spawn_and_fail(event, context):
    handler(event, context)
    raise RuntimeError("after spawning")

def detached(event, context):
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # out of the run's process group
    with open(event["pid_file"], "w") as handle:
        handle.write(str(child.pid))
    return "detached"

def daemon(event, context):
    """The classic double fork: the sleep's parent is gone before the handler returns."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid:
            os.write(write_end, str(pid).encode())
            os._exit(0)
        os.execvp("sleep", ["sleep", "300"])
    pid = int(os.read(read_end, 32))
    with open(event["pid_file"], "w") as handle:
        handle.write(str(pid))
    return "daemonised"
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waiting for init is gone
    except FileNotFoundError:
        return False


@needs_py311
@pytest.mark.parametrize("function", ["handler", "spawn_and_fail", "detached", "daemon"])
def test_invoke_ends_the_handlers_child_processes(invoke, tmp_path, function):
    """#16 finding 21: a handler that starts `sleep 300` leaves nothing running once invoke returns (ok or error),
    also when the sleep left the run's process group (setsid) or was daemonised by a double fork."""
    reliability_figures.count("faults", detail="handler child processes left running")
    code = tmp_path / "code"
    code.mkdir()
    (code / "spawner.py").write_text(SPAWNER)
    pid_file = tmp_path / "child.pid"
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pid_file": str(pid_file)}))
    result = invoke("invoke", f"spawner.{function}", "--event", event, "--code", code, "--python", "3.11",
                    "--no-credentials", "--timeout", "30")  # fmt: skip
    assert result.exit_code == (1 if function == "spawn_and_fail" else 0), result.output
    pid = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:  # bounded: the kill is sent before invoke returns
            time.sleep(0.05)
        assert not _alive(pid), f"the handler's child {pid} still runs after invoke returned"
    finally:
        if _alive(pid):
            os.kill(pid, 9)


if sys.platform != "linux":  # /proc, process groups and sleep: the invoke tests are Linux's
    pytestmark = pytest.mark.skip(reason="Linux only")


# -- re-check of #16: JSON layerbuild reads back from its own files --------------------------------------------


def test_a_deeply_nested_arns_record_is_replaced_not_a_crash(tmp_path):
    """#16 (re-check): a NAME.arns.json nested 100,000 deep made publish exit 70 (RecursionError); a record that
    is a directory was an internal error too. Now the damaged record is replaced; a directory is one line."""
    from types import SimpleNamespace

    from layerbuild.publish.plan import PublishError

    from layerbuild.publish.aws import record_arns

    zip_path = tmp_path / "demo-python3.12-x86_64.zip"
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:demo:3"
    record = tmp_path / "demo-python3.12-x86_64.arns.json"
    record.write_text("[" * 100_000 + "]" * 100_000)
    reliability_figures.count("bad_inputs", 2, detail="damaged ARN records")
    written = record_arns(SimpleNamespace(zip_path=zip_path), [SimpleNamespace(region="us-east-1", arn=arn)])
    assert written == record and json.loads(record.read_text()) == {"us-east-1": arn}
    record.write_text(json.dumps({"eu-west-1": "arn:x\",\n]\nresource", "us-west-2": arn.replace("us-east-1", "us-west-2")}))
    record_arns(SimpleNamespace(zip_path=zip_path), [SimpleNamespace(region="us-east-1", arn=arn)])
    assert set(json.loads(record.read_text())) == {"us-east-1", "us-west-2"}  # a hostile entry is not kept
    record.unlink()
    record.mkdir()
    with pytest.raises(PublishError, match="arns.json: not a file"):
        record_arns(SimpleNamespace(zip_path=zip_path), [SimpleNamespace(region="us-east-1", arn=arn)])


def test_a_deeply_nested_cache_entry_record_is_a_corrupted_entry(tmp_path):
    """#16 (re-check): a build-cache entry.json nested 100,000 deep made the next build exit 70."""
    from layerbuild.cache import builds as cache

    zip_path, manifest_path = tmp_path / "a.zip", tmp_path / "a.json"
    zip_path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    manifest_path.write_text("{}")
    root = tmp_path / "builds"
    cache.store("k" * 64, zip_path, manifest_path, root)
    assert cache.lookup("k" * 64, root)[1] == "hit"
    (cache.entry_dir("k" * 64, root) / cache.ENTRY_NAME).write_text("[" * 100_000 + "]" * 100_000)
    reliability_figures.count("bad_inputs", detail="deeply nested cache entry record")
    assert cache.lookup("k" * 64, root) == (None, "corrupted")
    assert not cache.entry_dir("k" * 64, root).exists()
