"""`layerbuild test`: import smoke tests on real and hand-made layers, locally and in the stand-in runtime image."""

import json
import os
import stat
from pathlib import Path

import pytest
from runtime_layers import build_real_layer, hostile_layer, make_layer

from layerbuild.backends.distinfo import top_level_modules
from layerbuild.verify.interpreters import find_local_python, parse_probe

HAVE_PY311 = find_local_python("3.11", "x86_64") is not None
needs_py311 = pytest.mark.skipif(not HAVE_PY311, reason="no local python3.11 for x86_64")
STANDIN = os.environ.get("LAYERBUILD_TEST_BUILD_IMAGE")
if not STANDIN and os.environ.get("CI") == "true":
    raise RuntimeError("CI=true but LAYERBUILD_TEST_BUILD_IMAGE is unset: .ci/run must build the stand-in image")
needs_docker = pytest.mark.skipif(not STANDIN, reason="LAYERBUILD_TEST_BUILD_IMAGE unset (run tests/images/build-standin.sh)")
MANIFEST_311 = {"name": "handmade", "python": "3.11", "architecture": "x86_64", "runtime": "python3.11", "backend": "wheels",
                "packages": [], "file_count": 1, "zipped_bytes": 1, "unzipped_bytes": 1, "sha256": "0" * 64,
                "code_sha256": "", "zip": "l.zip"}  # fmt: skip


@pytest.fixture(scope="module")
def real_layers(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return {
        "pymysql": build_real_layer(out, "pymysql", ["pymysql"]),
        "yaml": build_real_layer(out, "yamlsmoke", ["pyyaml"]),
    }


def run_json(invoke, *args):
    result = invoke("test", *args, "--json")
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def broken_layer(tmp_path: Path) -> Path:
    return make_layer(tmp_path / "broken.zip", {
        "python/fine.py": "VALUE = 1\n",
        "python/needs_lib/__init__.py": "raise ImportError('libfoo.so.1: cannot open shared object file')\n",
        "python/fakeext.cpython-311-x86_64-linux-gnu.so": b"not an ELF file at all",
        "python/writer/__init__.py": "import os\nopen(os.path.join(os.path.dirname(__file__), 'cache.txt'), 'w').write('x')\n",
        "python/sees_opt_lib.py": "import os, sys\nroot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
                                  "assert os.path.join(root, 'lib') in os.environ['LD_LIBRARY_PATH'].split(':'), os.environ['LD_LIBRARY_PATH']\n"
                                  "assert sys.path[:2] == [os.path.join(root, 'python', 'lib', 'python3.11', 'site-packages'), os.path.join(root, 'python')], sys.path\n",
        "lib/libfoo.txt": "not a library\n",
    }, MANIFEST_311)  # fmt: skip


# ---- real layers, local interpreter ---------------------------------------------------------


@pytest.mark.network
@needs_py311
def test_real_layers_pass_locally(invoke, real_layers):
    result, report = run_json(invoke, real_layers["pymysql"], "--where", "local")
    assert result.exit_code == 0, result.stderr
    assert report["ok"] and report["read_only"] and report["where"].startswith("local ")
    assert [r["module"] for r in report["results"]] == ["pymysql"]
    assert report["modules_from"] == "recipe pymysql"  # the manifest names recipes/pymysql.yaml, which has imports:
    assert report["results"][0]["ms"] > 0 and report["results"][0]["error"] is None
    # pyyaml: a compiled extension; the modules come from the dist-info metadata
    result, report = run_json(invoke, real_layers["yaml"], "--where", "local", "--import", "yaml", "--import", "_yaml")
    assert result.exit_code == 0, result.stderr
    assert [(r["module"], r["ok"]) for r in report["results"]] == [("yaml", True), ("_yaml", True)]


@pytest.mark.network
@needs_py311
def test_modules_from_metadata_and_text_report(invoke, real_layers):
    result = invoke("test", real_layers["yaml"], "--where", "local")
    assert result.exit_code == 0, result.stderr
    assert "modules from dist-info metadata" in result.stdout and "ok   yaml" in result.stdout
    assert result.stdout.rstrip().endswith("1 passed, 0 failed")


@pytest.mark.network
@needs_py311
def test_host_site_packages_are_invisible(invoke, real_layers):
    # pytest and click are installed in the project venv running this test; the layer must not see them
    result, report = run_json(invoke, real_layers["pymysql"], "--where", "local", "--import", "pymysql", "--import", "pytest")
    assert result.exit_code == 1
    by_module = {r["module"]: r for r in report["results"]}
    assert by_module["pymysql"]["ok"]
    assert by_module["pytest"]["error"] == "ModuleNotFoundError: No module named 'pytest'"


# ---- hand-made layers -------------------------------------------------------------------


@needs_py311
def test_failing_imports_are_reported_with_module_and_reason(invoke, tmp_path):
    zip_path = broken_layer(tmp_path)
    result, report = run_json(invoke, zip_path, "--where", "local", "--import", "fine", "--import", "needs_lib",
                              "--import", "fakeext", "--import", "sees_opt_lib")  # fmt: skip
    assert result.exit_code == 1
    by_module = {r["module"]: r for r in report["results"]}
    assert by_module["fine"]["ok"] and by_module["sees_opt_lib"]["ok"], by_module["sees_opt_lib"]["error"]
    assert by_module["needs_lib"]["error"] == "ImportError: libfoo.so.1: cannot open shared object file"
    assert by_module["fakeext"]["error"].startswith("ImportError:") and "fakeext" in by_module["fakeext"]["error"]
    text = invoke("test", zip_path, "--where", "local", "--import", "needs_lib").stdout
    assert "FAIL needs_lib" in text and "0 passed, 1 failed: needs_lib" in text


@needs_py311
def test_layer_is_read_only(invoke, tmp_path):
    zip_path = broken_layer(tmp_path)
    result, report = run_json(invoke, zip_path, "--where", "local", "--import", "writer")
    assert result.exit_code == 1 and report["read_only"] is True
    [writer] = report["results"]
    assert not writer["ok"]
    assert "Read-only file system" in writer["error"] or "Permission denied" in writer["error"]


@needs_py311
def test_import_timeout_is_one_line_error(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "slow.zip", {"python/slow.py": "import time\ntime.sleep(60)\n"}, MANIFEST_311)
    result = invoke("test", zip_path, "--where", "local", "--import", "slow", "--timeout", "1")
    assert result.exit_code == 1
    assert result.stderr == "error: importing slow with local " + str(find_local_python("3.11", "x86_64").executable) + \
        " did not finish within 1s and was stopped\n"


def test_cannot_test_a_target_without_interpreter_or_docker(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, {**MANIFEST_311, "python": "3.14", "runtime": "python3.14"})
    result = invoke("test", zip_path, "--python", "3.14")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot test {zip_path} for python3.14-x86_64: cannot reach a Docker engine")
    assert "no local python3.14 for x86_64 was found on PATH" in result.stderr and result.stderr.count("\n") == 1
    result = invoke("test", zip_path, "--python", "3.14", "--where", "local")
    assert result.exit_code == 3 and "no local python3.14" in result.stderr


def test_no_target_and_no_modules_are_one_line_errors(invoke, tmp_path):
    bare = make_layer(tmp_path / "bare.zip", {"python/x.py": ""})
    result = invoke("test", bare)
    assert result.exit_code == 1 and "no layerbuild manifest beside the zip" in result.stderr and "--python X.Y" in result.stderr
    if HAVE_PY311:
        empty = make_layer(tmp_path / "empty.zip", {"python/data.txt": "", "python/_private.py": ""})
        result = invoke("test", empty, "--python", "3.11", "--arch", "x86_64", "--where", "local")
        assert result.exit_code == 1
        assert result.stderr == f"error: {empty}: no importable modules found (no package or module under python/); name them with --import MODULE\n"


@pytest.mark.skipif(not HAVE_PY311, reason="needs a local python3.11")
def test_modules_without_metadata_are_found_on_disk(invoke, tmp_path):
    """#16 (re-check): a layer whose dist-info was excluded, or whose top_level.txt names nothing real, is
    still tested: its public packages and modules are imported, never reported as 'no modules'."""
    layer = make_layer(tmp_path / "nometa.zip", {"python/x.py": "X = 1\n", "python/pkg/__init__.py": "",
                                                  "python/bogus-1.0.dist-info/top_level.txt": "os\n..\n/etc\n" + "m" * 100000 + "\n",
                                                  "python/bogus-1.0.dist-info/METADATA": "Name: bogus\nVersion: 1.0\n"})  # fmt: skip
    result = invoke("test", layer, "--python", "3.11", "--arch", "x86_64", "--where", "local")
    assert result.exit_code == 0, result.output
    assert "pkg" in result.output and "x" in result.output


def test_hostile_zip_is_refused_before_anything_runs(invoke, tmp_path):
    zip_path = hostile_layer(tmp_path / "evil" / "evil.zip")
    result = invoke("test", zip_path, "--python", "3.11", "--arch", "x86_64", "--where", "local", "--import", "ok")
    assert result.exit_code == 1
    assert result.stderr == f"error: {zip_path}: entry '../escaped.py' climbs out of the layer with '..'\n"
    assert not (tmp_path / "escaped.py").exists() and not (tmp_path / "evil" / "escaped.py").exists()


# ---- finding interpreters ------------------------------------------------------------------


def fake_python(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_pyenv_shim_for_a_missing_version_is_absent(tmp_path):
    fake_python(tmp_path / "shims", "python3.9", "echo 'pyenv: python3.9: command not found' >&2; exit 127")
    assert find_local_python("3.9", "x86_64", path=str(tmp_path / "shims")) is None


def test_an_interpreter_of_another_version_or_machine_is_absent(tmp_path):
    fake_python(tmp_path / "a", "python3.10", "echo '3.9 x86_64 /usr/bin/python3.9'")
    fake_python(tmp_path / "b", "python3.10", "echo '3.10 aarch64 /usr/bin/python3.10'")
    assert find_local_python("3.10", "x86_64", path=f"{tmp_path}/a:{tmp_path}/b") is None
    found = find_local_python("3.10", "arm64", path=f"{tmp_path}/a:{tmp_path}/b")
    assert found is not None and found.executable == Path("/usr/bin/python3.10") and found.machine == "aarch64"


@needs_py311
def test_the_real_python311_is_found_behind_shims():
    found = find_local_python("3.11", "x86_64")
    assert found.python == "3.11" and "shims" not in str(found.executable)


def test_parse_probe_rejects_garbage():
    assert parse_probe("") is None and parse_probe("pyenv: nope") is None
    assert parse_probe("3.12 x86_64 /opt/py/bin/python3.12\n").python == "3.12"


# ---- distributions' top-level modules ------------------------------------------------------


def dist(site: Path, name: str, files: dict[str, str], top_level: str | None = None) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Name: {name}\nVersion: 1.0\n")
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level)
    record = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        record.append(f"{rel},,")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_top_level_modules_of_real_distribution_shapes(tmp_path):
    site = tmp_path / "python"
    dist(site, "Pillow", {"PIL/__init__.py": "", "pillow.libs/libjpeg.so.62": ""}, "PIL\n")
    dist(site, "psycopg2_binary", {"psycopg2/__init__.py": "", "psycopg2_binary.libs/libpq.so.5": ""}, "psycopg2\n")
    dist(site, "PyYAML", {"yaml/__init__.py": "", "_yaml/__init__.py": ""}, "_yaml\nyaml\n")
    dist(site, "python_dateutil", {"dateutil/__init__.py": ""}, "dateutil\n")
    dist(site, "pydantic", {"pydantic/__init__.py": ""})  # hatchling: no top_level.txt
    dist(site, "pydantic_core", {"pydantic_core/__init__.py": "", "pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so": ""})
    dist(site, "typing_extensions", {"typing_extensions.py": ""})
    dist(site, "six", {"six.py": ""}, "six\n")
    assert top_level_modules(site) == ["PIL", "dateutil", "psycopg2", "pydantic", "pydantic_core", "six", "typing_extensions", "yaml"]


# ---- in the stand-in runtime image (Docker) -------------------------------------------------


@pytest.mark.network
@pytest.mark.docker
@needs_docker
def test_in_the_standin_runtime_image(invoke, real_layers, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERBUILD_RUNTIME_IMAGE", STANDIN)
    result, report = run_json(invoke, real_layers["yaml"], "--where", "docker", "--import", "yaml", "--import", "_yaml")
    assert result.exit_code == 0, result.stderr
    assert report["where"] == f"docker {STANDIN}" and report["ok"] and report["read_only"]
    zip_path = broken_layer(tmp_path)
    result, report = run_json(invoke, zip_path, "--image", STANDIN, "--import", "fine", "--import", "needs_lib",
                              "--import", "writer", "--import", "sees_opt_lib")  # fmt: skip
    assert result.exit_code == 1 and report["where"] == f"docker {STANDIN}"
    by_module = {r["module"]: r for r in report["results"]}
    assert by_module["fine"]["ok"] and by_module["sees_opt_lib"]["ok"], by_module["sees_opt_lib"]["error"]
    assert by_module["needs_lib"]["error"] == "ImportError: libfoo.so.1: cannot open shared object file"
    assert "Read-only file system" in by_module["writer"]["error"]


@pytest.mark.docker
@needs_docker
def test_image_of_another_python_cannot_test_the_target(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, {**MANIFEST_311, "python": "3.12", "runtime": "python3.12"})
    result = invoke("test", zip_path, "--image", STANDIN, "--where", "docker", "--import", "x")
    assert result.exit_code == 3
    assert result.stderr == (f"error: docker {STANDIN} runs Python 3.11, but {zip_path} targets python3.12-x86_64; "
                             "choose an image or interpreter of Python 3.12\n")  # fmt: skip


@pytest.mark.docker
@needs_docker
def test_missing_runtime_image_with_docker_required(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, MANIFEST_311)
    result = invoke("test", zip_path, "--image", "layerbuild-no-such-image:0", "--where", "docker", "--import", "x")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: runtime image 'layerbuild-no-such-image:0' is not on the Docker engine")
    assert result.stderr.count("\n") == 1 and "--image or LAYERBUILD_RUNTIME_IMAGE" in result.stderr


@pytest.mark.docker
@needs_docker
@needs_py311
def test_auto_falls_back_to_a_local_interpreter_when_the_image_is_missing(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, MANIFEST_311)
    result, report = run_json(invoke, zip_path, "--image", "layerbuild-no-such-image:0", "--import", "x")
    assert result.exit_code == 0, result.stderr
    assert report["where"].startswith("local ") and report["ok"]
    assert report["notes"][0].startswith("not in Docker: runtime image 'layerbuild-no-such-image:0' is not on the Docker engine")


@needs_py311
def test_a_module_that_crashes_the_interpreter_is_named(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/fine.py": "", "python/crasher.py": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"},
                          MANIFEST_311)  # fmt: skip
    result = invoke("test", zip_path, "--where", "local", "--import", "fine", "--import", "crasher")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: importing crasher ended the interpreter in local ")
    assert "(signal 11) before it could report" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.docker
@needs_docker
def test_a_crash_in_the_runtime_image_is_named(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/crasher.py": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"}, MANIFEST_311)
    result = invoke("test", zip_path, "--image", STANDIN, "--where", "docker", "--import", "crasher")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: importing crasher ended the interpreter in docker {STANDIN} (signal 11)")


@pytest.mark.docker
@needs_docker
def test_an_image_of_another_architecture_cannot_test_the_target(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, {**MANIFEST_311, "architecture": "arm64"})
    result = invoke("test", zip_path, "--image", STANDIN, "--where", "docker", "--import", "x")
    assert result.exit_code == 3
    assert result.stderr == (f"error: cannot test for python3.11-arm64: runtime image {STANDIN!r} is linux/amd64, not linux/arm64 "
                             "as python3.11-arm64 needs; choose an image for linux/arm64 with --image\n")  # fmt: skip


def test_a_layer_is_tested_for_the_runtime_it_was_built_for(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "l.zip", {"python/x.py": ""}, MANIFEST_311)
    result = invoke("test", zip_path, "--python", "3.12", "--import", "x")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {zip_path} is built for python3.11 x86_64 (its manifest), not python3.12 x86_64: "
                             f"Lambda would refuse it there; test it as built, or build it for python3.12-x86_64\n")  # fmt: skip


def test_packages_at_the_zip_root_are_named_with_the_fix(invoke, tmp_path):
    zip_path = make_layer(tmp_path / "root.zip", {"pymysql/__init__.py": "", "pymysql-1.0.dist-info/METADATA": ""})
    result = invoke("test", zip_path, "--python", "3.11", "--arch", "x86_64", "--where", "local")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "Python code at the zip root (pymysql, pymysql-1.0.dist-info)" in result.stderr
    assert "put packages under python/" in result.stderr
