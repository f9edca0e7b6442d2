"""layerbuild stack on real layer zips: later layers win, shadowed packages, limits, common support."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from layerbuild.audit.stack import StackLayer, simulate_stack, top_level_package
from layerbuild.build.pipeline import build_target
from layerbuild.limits import UNZIPPED_LIMIT
from layerbuild.model.recipe import load_recipe
from layerbuild.model.runtimes import make_target
from layerbuild.util.safezip import RATIO_MIN_BYTES

STACK_KEYS = {"ok", "layers", "function", "errors", "warnings", "overrides", "shadowed_packages", "sizes",
              "common_runtimes", "common_architectures", "runtime_shadowed"}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("stack-built")
    with pytest.MonkeyPatch.context() as patch:  # the session's build cache, not the user's home
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
        return {f"{name}-{arch}": build_target(load_recipe(name), make_target("3.12", arch), backend="wheels", out_dir=out).zip_path
                for name, arch in (("pymysql", "x86_64"), ("numpy", "x86_64"), ("numpy", "arm64"))}  # fmt: skip


def copy_layer(src: Path, dest: Path, with_manifest: bool = True) -> Path:
    shutil.copyfile(src, dest)
    if with_manifest:
        shutil.copyfile(src.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


def stack_json(invoke, *args) -> tuple[int, dict]:
    result = invoke("stack", *args, "--json")
    return result.exit_code, json.loads(result.stdout)


def test_two_layers_with_numpy_shadow_and_the_later_wins(built, invoke, tmp_path):
    second = copy_layer(built["numpy-x86_64"], tmp_path / "numpy-again.zip")
    code, data = stack_json(invoke, built["numpy-x86_64"], second)
    assert code == 0 and set(data) == STACK_KEYS
    assert data["layers"] == ["numpy-python3.12-x86_64.zip", "numpy-again.zip"]
    assert data["shadowed_packages"] == [{"package": "numpy", "winner": "numpy-again.zip",
                                          "providers": ["numpy-python3.12-x86_64.zip:python/numpy", "numpy-again.zip:python/numpy"]}]  # fmt: skip
    with zipfile.ZipFile(second) as archive:
        files = {i.filename for i in archive.infolist() if not i.is_dir()}
    assert {o["path"] for o in data["overrides"]} == files
    assert all(o["winner"] == "numpy-again.zip" for o in data["overrides"])
    assert {"overridden-path", "shadowed-package"} == {w["rule"] for w in data["warnings"]}
    assert data["common_runtimes"] == ["python3.12"] and data["common_architectures"] == ["x86_64"]
    text = invoke("stack", built["numpy-x86_64"], second)
    assert text.exit_code == 0
    numpy_files = sum(1 for f in files if f.startswith("python/numpy/"))
    assert f"python/numpy/ ({numpy_files} paths): numpy-python3.12-x86_64.zip < numpy-again.zip -> numpy-again.zip" in text.stdout
    assert "package numpy is provided by numpy-again.zip, numpy-python3.12-x86_64.zip; numpy-again.zip wins" in text.stdout


def test_site_packages_copy_wins_over_python_whatever_the_order(built, invoke, tmp_path):
    moved = tmp_path / "moved.zip"
    with zipfile.ZipFile(built["pymysql-x86_64"]) as src, zipfile.ZipFile(moved, "w") as dest:
        for info in src.infolist():
            if not info.is_dir():
                dest.writestr(info.filename.replace("python/", "python/lib/python3.12/site-packages/", 1), src.read(info))
    code, data = stack_json(invoke, moved, built["pymysql-x86_64"])
    assert code == 0
    assert data["overrides"] == []  # different paths: both copies land in /opt
    assert data["shadowed_packages"][0]["package"] == "pymysql" and data["shadowed_packages"][0]["winner"] == "moved.zip"
    assert "unknown-runtime" in {w["rule"] for w in data["warnings"]}  # moved.zip has no manifest


def test_function_code_wins_and_counts_towards_the_size(built, invoke, tmp_path):
    function = tmp_path / "function.zip"
    with zipfile.ZipFile(function, "w") as archive:
        archive.writestr("handler.py", "import pymysql\n")
        archive.writestr("pymysql/__init__.py", "# vendored\n")
    code, data = stack_json(invoke, built["pymysql-x86_64"], "--function", function)
    assert code == 0 and data["function"] == "function.zip"
    shadow = data["shadowed_packages"][0]
    assert shadow["package"] == "pymysql" and shadow["winner"] == "function"
    layer_bytes = sum(i.file_size for i in zipfile.ZipFile(built["pymysql-x86_64"]).infolist())
    assert data["sizes"]["unzipped_bytes"] == layer_bytes + len("import pymysql\n") + len("# vendored\n")


def test_six_layers_is_an_error(built, invoke, tmp_path):
    layers = [copy_layer(built["pymysql-x86_64"], tmp_path / f"layer{i}.zip") for i in range(6)]
    code, data = stack_json(invoke, *layers)
    assert code == 1 and data["ok"] is False
    assert data["errors"] == [{"rule": "too-many-layers", "path": "", "message": "6 layers; Lambda allows at most 5 per function"}]
    assert stack_json(invoke, *layers[:5])[0] == 0
    result = invoke("stack", *layers)
    assert result.exit_code == 1 and "error [too-many-layers] 6 layers" in result.stdout


def test_incompatible_architectures(built, invoke):
    code, data = stack_json(invoke, built["numpy-x86_64"], built["numpy-arm64"], built["pymysql-x86_64"])
    assert code == 1
    assert [e["rule"] for e in data["errors"]] == ["no-common-architecture"]
    assert data["common_architectures"] == [] and data["common_runtimes"] == ["python3.12"]
    message = data["errors"][0]["message"]
    assert "numpy-python3.12-x86_64.zip: x86_64" in message and "numpy-python3.12-arm64.zip: arm64" in message


def test_incompatible_runtimes(built, invoke, tmp_path):
    other = copy_layer(built["pymysql-x86_64"], tmp_path / "old.zip")
    manifest = json.loads(other.with_suffix(".json").read_text())
    manifest.update(runtime="python3.11", python="3.11", compatible_runtimes=["python3.10", "python3.11"])
    other.with_suffix(".json").write_text(json.dumps(manifest))
    code, data = stack_json(invoke, built["pymysql-x86_64"], other)
    assert code == 1 and [e["rule"] for e in data["errors"]] == ["no-common-runtime"]
    assert "old.zip: python3.10, python3.11" in data["errors"][0]["message"]


def test_function_plus_layers_over_the_size_limit(invoke, tmp_path):
    # Each layer is fine alone (about 142 MB of zeros in entries below safezip's ratio threshold); together they are not.
    chunk, count = RATIO_MIN_BYTES - 1, 17
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for index in range(count):
                archive.writestr(f"python/{name}/zeros{index}.bin", bytes(chunk))
        paths.append(path)
    code, data = stack_json(invoke, *paths)
    assert code == 1 and [e["rule"] for e in data["errors"]] == ["unzipped-size"]
    assert data["sizes"] == {"unzipped_bytes": 2 * count * chunk, "unzipped_limit": UNZIPPED_LIMIT}
    assert data["common_runtimes"] is None  # no manifests: nothing known, nothing claimed


def test_bad_input_is_one_line(invoke, tmp_path):
    result = invoke("stack", tmp_path / "nope.zip")
    assert result.exit_code == 1 and result.stderr == f"error: {tmp_path / 'nope.zip'}: no such file\n"
    (tmp_path / "evil.zip").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("python/../../evil.py", "boom")
    result = invoke("stack", tmp_path / "evil.zip")
    assert result.exit_code == 1 and "climbs out of the layer" in result.stderr and len(result.stderr.splitlines()) == 1
    result = invoke("stack")
    assert result.exit_code == 2 and "Missing argument" in result.stderr


def test_top_level_package_names():
    assert top_level_package("python/numpy/__init__.py") == ("numpy", "python/numpy")
    assert top_level_package("python/lib/python3.12/site-packages/six.py") == ("six", "python/lib/python3.12/site-packages/six.py")
    assert top_level_package("python/_cffi_backend.cpython-312-x86_64-linux-gnu.so")[0] == "_cffi_backend"
    assert top_level_package("python/numpy-2.0.dist-info/RECORD") is None
    assert top_level_package("python/numpy.libs/libx.so") is None
    assert top_level_package("lib/libz.so.1") is None
    assert top_level_package("numpy/__init__.py", in_function=True) == ("numpy", "numpy")


def test_layers_without_manifests_claim_no_support():
    report = simulate_stack([StackLayer("a.zip", {"python/a.py": 1}), StackLayer("b.zip", {"python/b.py": 2})])
    assert report.ok and report.common_runtimes is None and report.common_architectures is None
    assert report.unzipped_bytes == 3 and report.overrides == [] and report.shadowed == []


def test_a_layer_that_shadows_the_runtimes_boto3_is_reported_with_both_versions(invoke, tmp_path):
    from runtime_layers import make_layer

    manifest = {"name": "sdk", "python": "3.12", "architecture": "x86_64", "runtime": "python3.12", "backend": "wheels",
                "packages": [], "file_count": 2, "zipped_bytes": 1, "unzipped_bytes": 1, "sha256": "0" * 64,
                "code_sha256": "", "zip": "sdk.zip", "compatible_runtimes": ["python3.12"]}  # fmt: skip
    sdk = make_layer(tmp_path / "sdk.zip", {"python/boto3/__init__.py": "", "python/boto3-1.40.0.dist-info/METADATA": "",
                                            "python/pymysql/__init__.py": ""}, manifest)  # fmt: skip
    code, report = stack_json(invoke, sdk)
    assert code == 0 and report["runtime_shadowed"] == [
        {"package": "boto3", "provider": "sdk.zip", "version": "1.40.0", "runtime_versions": {"python3.12": "1.28.72"}}]
    [warning] = [w for w in report["warnings"] if w["rule"] == "runtime-package-shadowed"]
    assert warning["message"] == ("boto3 1.40.0 from sdk.zip is imported instead of the runtime's own (python3.12 ships "
                                  "1.28.72): the layer's copy wins")  # fmt: skip
    # the function's own copy comes first of all (/var/task)
    function = make_layer(tmp_path / "fn.zip", {"boto3/__init__.py": "", "boto3-1.41.0.dist-info/RECORD": ""})
    code, report = stack_json(invoke, sdk, "--function", function)
    assert [(r["provider"], r["version"]) for r in report["runtime_shadowed"]] == [("function", "1.41.0")]


def test_the_very_version_the_runtime_ships_is_no_surprise():
    layer = StackLayer("six.zip", {"python/six.py": 1, "python/six-1.17.0.dist-info/RECORD": 1}, ("python3.12",), ("x86_64",))
    report = simulate_stack([layer], runtime_packages={"python3.12": {"six": "1.17.0"}, "python3.8": {"six": "1.16.0"}})
    assert report.runtime_shadowed == [] and not any(w.rule == "runtime-package-shadowed" for w in report.warnings)
    older = StackLayer("six.zip", {"python/six.py": 1, "python/six-1.16.0.dist-info/RECORD": 1})  # no manifest: all runtimes
    report = simulate_stack([older], runtime_packages={"python3.10": {"six": "1.17.0"}, "python3.8": {"six": "1.16.0"}})
    [shadow] = report.runtime_shadowed
    assert list(shadow.runtime_versions) == ["python3.8", "python3.10"]  # in version order
