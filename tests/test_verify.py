"""Every build is verified: its modules are imported on the target's Python before anything reaches dist/.

Real layers of popular packages are built with the defaults and then *used* (a client created, a model
fitted, a PNG rendered) in a fresh interpreter that sees only the layer, read-only, and the runtime's own
packages after it, as on Lambda. Hand-made packages on a loopback index show the failure paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import tree_snapshot
from faultproxy import PackageIndex

from layerbuild.build.pipeline import build_target
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import RUNTIMES, make_target
from layerbuild.verify import runtimesdk
from layerbuild.verify import venues as verify
from layerbuild.verify.interpreters import find_local_python
from layerbuild.verify.optdir import layers_extracted, read_only_command

PY = "3.11"
HAVE_PY = find_local_python(PY, "x86_64") is not None
needs_py = pytest.mark.skipif(not HAVE_PY, reason=f"no local python{PY} for x86_64")
STANDIN = os.environ.get("LAYERBUILD_TEST_BUILD_IMAGE")
SYSROOT = os.environ.get("LAYERBUILD_SYSROOT_ARM64")
if os.environ.get("CI") == "true" and not SYSROOT:
    raise RuntimeError("CI=true but LAYERBUILD_SYSROOT_ARM64 is unset: .ci/run must make the arm64 sysroot")


def use_layer(zip_path: Path, code: str, python: str = PY, runtime_packages: bool = True) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter of the layer's Python that sees the layer (read-only, as /opt) and then
    the runtime's own packages, nothing of the host's site-packages."""
    interpreter = find_local_python(python, "x86_64")
    assert interpreter is not None
    after = [str(runtimesdk.ensure(RUNTIMES[python]))] if runtime_packages else []
    with layers_extracted([zip_path], prefix="layerbuild-use-") as root:
        prelude = (f"import sys\nsys.path[:0] = [{str(root / 'python' / 'lib' / f'python{python}' / 'site-packages')!r}, "
                   f"{str(root / 'python')!r}] + {after!r}\n")  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "HOME": str(root.parent), "LD_LIBRARY_PATH": str(root / "lib"),
               "MPLCONFIGDIR": str(root.parent / "mpl"), "LANG": "C.UTF-8"}  # fmt: skip
        argv = read_only_command(root, [str(interpreter.executable), "-I", "-S", "-B", "-c", prelude + code])
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=root.parent)


def manifest_of(outcome) -> dict:
    return json.loads(outcome.manifest_path.read_text())


# ---- popular packages: built with the defaults, verified, used --------------------------------------------------

USES = {
    "boto3": ("boto3", """
import boto3, botocore
client = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
assert client.meta.region_name == "eu-west-1"
url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k k"}, ExpiresIn=60)
assert url.startswith("https://") and "/b/k%20k?" in url or "b.s3" in url, url
assert "lambda" in boto3.session.Session().get_available_services()
assert boto3.__file__.startswith(sys.path[1]), boto3.__file__  # the layer's boto3, not the runtime's
print("used", boto3.__version__)
"""),
    "powertools": ("aws-lambda-powertools", """
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
app = APIGatewayRestResolver()
@app.get("/hello/<name>")
def hello(name):
    return {"message": "hello " + name}
event = {"httpMethod": "GET", "path": "/hello/lambda", "resource": "/hello/{name}", "headers": {},
         "queryStringParameters": None, "requestContext": {"requestId": "r", "stage": "test"}, "body": None,
         "isBase64Encoded": False, "pathParameters": {"name": "lambda"}}
response = app.resolve(event, None)
assert response["statusCode"] == 200 and "hello lambda" in response["body"], response
Logger(service="t").info("used")
print("used")
"""),
    "sklearn": ("scikit-learn", """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
model = LogisticRegression(max_iter=500).fit(X_train, y_train)
assert model.score(X_test, y_test) > 0.9
print("used", model.score(X_test, y_test))
"""),
    "matplotlib": ("matplotlib", """
import io
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [1, 4, 9]); ax.set_title("layer")
buffer = io.BytesIO()
fig.savefig(buffer, format="png")
assert buffer.getvalue().startswith(b"\\x89PNG") and len(buffer.getvalue()) > 5000
print("used", len(buffer.getvalue()))
"""),
}


@pytest.fixture(scope="module")
def popular(tmp_path_factory):
    out = tmp_path_factory.mktemp("popular")
    built = {}
    for name, (package, _) in USES.items():
        recipe = parse_recipe({"name": name, "packages": [package], "python": [PY]}, f"<{name}>")
        built[name] = build_target(recipe, make_target(PY, "x86_64"), out_dir=out)
    return built


@pytest.mark.network
@pytest.mark.slow
@needs_py
@pytest.mark.parametrize("name", list(USES))
def test_popular_packages_build_verified_and_work_when_used(popular, name):
    outcome = popular[name]
    manifest = manifest_of(outcome)
    assert manifest["verified"] is True, manifest["verification"]
    record = manifest["verification"]
    assert record["how"] == "local" and record["python"].startswith(PY + ".") and record["read_only"] is True
    assert record["modules"] and record["seconds"] > 0
    done = use_layer(outcome.zip_path, USES[name][1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "used" in done.stdout


# ---- failures: nothing reaches dist/ -----------------------------------------------------------------------------


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


def loopback_recipe(write_recipe, index, package: str, **fields):
    import yaml

    body = {"name": "lb", "packages": [package], "python": [PY], "index_url": index.simple_url, **fields}
    return write_recipe(yaml.safe_dump(body), filename="lb.yaml")


@needs_py
def test_a_layer_that_cannot_import_fails_its_build_in_one_line(index, invoke, write_recipe, tmp_path):
    index.add("brokenpkg", "1.0", files={"brokenpkg/__init__.py": b"from brokenpkg import _missing_part\n"})
    out = tmp_path / "dist"
    out.mkdir()
    (out / "keep.txt").write_text("a file we did not create")
    before = tree_snapshot(out)
    result = invoke("build", loopback_recipe(write_recipe, index, "brokenpkg"), "--out", out,
                    env={"UV_CACHE_DIR": str(tmp_path / "uv")})  # fmt: skip
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "import brokenpkg fails in local " in line
    assert "ImportError: cannot import name '_missing_part'" in line and "--no-verify" in line
    assert "Traceback" not in result.stderr
    assert tree_snapshot(out) == before  # nothing half-written, nothing of ours
    # --no-verify builds it, and the manifest says it was not verified
    result = invoke("build", loopback_recipe(write_recipe, index, "brokenpkg"), "--out", out, "--no-verify",
                    env={"UV_CACHE_DIR": str(tmp_path / "uv")})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / f"lb-python{PY}-x86_64.json").read_text())
    assert manifest["verified"] is False and manifest["verification"] == {"reason": "--no-verify"}
    assert "NOT verified (--no-verify)" in result.stdout


@needs_py
def test_an_exclude_that_removes_an_imported_module_is_named(tmp_path):
    recipe = parse_recipe({"name": "ex", "packages": ["pymysql"], "python": [PY], "exclude": ["python/pymysql/constants"]},
                          "ex.yaml")  # fmt: skip
    with pytest.raises(verify.VerifyError) as raised:
        build_target(recipe, make_target(PY, "x86_64"), out_dir=tmp_path / "dist")
    assert "No module named 'pymysql.constants'" in raised.value.message
    assert "the recipe's exclude removed python/pymysql/constants/__init__.py" in raised.value.message
    assert not (tmp_path / "dist" / f"ex-python{PY}-x86_64.zip").exists()


@needs_py
def test_when_slimming_breaks_an_import_the_layer_keeps_those_files_and_says_which(index, tmp_path):
    """A name no static scan can see: importlib.import_module("hidden." + "te" + "sts.helper")."""
    files = {
        "hidden/__init__.py": b"import importlib\nhelper = importlib.import_module('hidden.' + 'te' + 'sts.helper')\n",
        "hidden/tests/__init__.py": b"",
        "hidden/tests/helper.py": b"VALUE = 42\n",
        "hidden/tests/test_big.py": b"import hidden\n",
    }
    index.add("hidden", "1.0", files=files)
    recipe = parse_recipe({"name": "hid", "packages": ["hidden"], "python": [PY], "index_url": index.simple_url}, "hid.yaml")
    messages = []
    outcome = build_target(recipe, make_target(PY, "x86_64"), out_dir=tmp_path / "dist",
                           progress=lambda t, m: messages.append(m))  # fmt: skip
    manifest = manifest_of(outcome)
    assert manifest["verified"] is True
    broke = manifest["verification"]["slimming_broke"]
    assert "import hidden failed" in broke and "slimming removed python/hidden/tests/__init__.py" in broke, broke
    assert any(m.startswith("verification failed after slimming: import hidden fails") for m in messages), messages
    assert any("slimming broke imports, so this layer keeps every file slimming would remove" in n
               for n in manifest["extra"]["notes"])  # fmt: skip
    with zipfile.ZipFile(outcome.zip_path) as archive:
        assert "python/hidden/tests/helper.py" in archive.namelist()
    done = use_layer(outcome.zip_path, "import hidden\nassert hidden.helper.VALUE == 42\nprint('used')", runtime_packages=False)
    assert done.returncode == 0 and "used" in done.stdout, done.stderr


@needs_py
def test_a_failure_that_is_not_slimmings_fails_after_the_second_try(index, tmp_path):
    files = {"twice/__init__.py": b"raise RuntimeError('broken on purpose')\n", "twice/tests/__init__.py": b"",
             "twice/tests/test_x.py": b""}  # fmt: skip
    index.add("twice", "1.0", files=files)
    recipe = parse_recipe({"name": "tw", "packages": ["twice"], "python": [PY], "index_url": index.simple_url}, "tw.yaml")
    with pytest.raises(verify.VerifyError) as raised:
        build_target(recipe, make_target(PY, "x86_64"), out_dir=tmp_path / "dist")
    assert "RuntimeError: broken on purpose" in raised.value.message and "nothing was written" in raised.value.message
    assert not list((tmp_path / "dist").glob("*.zip"))


# ---- the runtime's own packages -------------------------------------------------------------------------------


@needs_py
def test_a_layer_that_relies_on_the_runtimes_boto3_verifies_with_it(index, tmp_path):
    """Lambda ships boto3: a package that imports it without requiring it works there, and so here."""
    index.add("usesboto", "1.0", files={"usesboto/__init__.py": b"import boto3\nSDK = boto3.__version__\n"})
    recipe = parse_recipe({"name": "ub", "packages": ["usesboto"], "python": [PY], "index_url": index.simple_url}, "ub.yaml")
    outcome = build_target(recipe, make_target(PY, "x86_64"), out_dir=tmp_path / "dist")
    manifest = manifest_of(outcome)
    sdk = RUNTIMES[PY].sdk
    assert manifest["verified"] is True
    assert f"boto3 {sdk.boto3}, botocore {sdk.botocore}" in manifest["verification"]["runtime_packages"]
    with zipfile.ZipFile(outcome.zip_path) as archive:
        assert not any(n.startswith("python/boto3/") for n in archive.namelist())  # nothing of it shipped
    done = use_layer(outcome.zip_path, f"import usesboto\nassert usesboto.SDK == {sdk.boto3!r}\nprint('used')")
    assert done.returncode == 0 and "used" in done.stdout, done.stderr


# ---- where verification runs, and when it cannot ---------------------------------------------------------------


def test_without_any_way_to_run_the_target_the_manifest_says_why(tmp_path, monkeypatch):
    """python3.14: no local interpreter (PATH and pyenv emptied), no Docker engine: built, not verified, and said."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    recipe = parse_recipe({"name": "nv", "packages": ["six"], "python": ["3.14"]}, "nv.yaml")
    messages = []
    outcome = build_target(recipe, make_target("3.14", "x86_64"), out_dir=tmp_path / "dist",
                           progress=lambda t, m: messages.append(m))  # fmt: skip
    manifest = manifest_of(outcome)
    reason = manifest["verification"]["reason"]
    assert manifest["verified"] is False
    assert "no local python3.14 for x86_64" in reason and "cannot reach a Docker engine" in reason
    assert [m for m in messages if m.startswith("not verified: ")] == [f"not verified: {reason}"]


OTHER_PY = next((p for p in ("3.12", "3.13", "3.10") if p != "%d.%d" % sys.version_info[:2] and find_local_python(p, "x86_64")), None)


@pytest.mark.skipif(OTHER_PY is None, reason="no local interpreter of a Lambda Python other than this one")
def test_an_unverified_cached_build_is_built_again_once_it_can_be_verified(tmp_path, monkeypatch):
    """(Another Python than the one running: the running one is always found.)"""
    recipe = parse_recipe({"name": "later", "packages": ["six"], "python": [OTHER_PY], "bytecode": "none"}, "later.yaml")
    target = make_target(OTHER_PY, "x86_64")
    tools = tmp_path / "tools-bin"  # the tools that change the layer's bytes stay (they are in the cache key)
    tools.mkdir()
    for name in ("strip", "x86_64-linux-gnu-strip"):
        if shutil.which(name):
            (tools / name).symlink_to(shutil.which(name))
    with monkeypatch.context() as hidden:
        hidden.setenv("PATH", str(tools))
        hidden.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
        hidden.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
        first = build_target(recipe, target, out_dir=tmp_path / "dist")
    assert first.status == "built" and manifest_of(first)["verified"] is False
    messages = []
    second = build_target(recipe, target, out_dir=tmp_path / "dist", progress=lambda t, m: messages.append(m))
    assert second.status == "built" and manifest_of(second)["verified"] is True
    assert any("was not verified the way asked for now, and can be: building again" in m for m in messages)
    third = build_target(recipe, target, out_dir=tmp_path / "dist")
    assert third.status == "cached" and manifest_of(third)["verified"] is True


@pytest.mark.skipif(not SYSROOT, reason="LAYERBUILD_SYSROOT_ARM64 unset (tests/images/arm64-sysroot.sh makes one)")
def test_an_arm64_layer_is_verified_under_qemu(tmp_path):
    recipe = parse_recipe({"name": "armv", "packages": ["pydantic"], "python": ["3.11"], "architectures": ["arm64"],
                           "imports": ["pydantic_core._pydantic_core"]}, "armv.yaml")  # fmt: skip
    outcome = build_target(recipe, make_target("3.11", "arm64"), out_dir=tmp_path / "dist")
    manifest = manifest_of(outcome)
    assert manifest["verified"] is True, manifest["verification"]
    record = manifest["verification"]
    assert record["how"] == "qemu" and record["machine"] == "aarch64" and "pydantic_core._pydantic_core" in record["modules"]


@pytest.mark.docker
@pytest.mark.skipif(not STANDIN, reason="LAYERBUILD_TEST_BUILD_IMAGE unset (run tests/images/build-standin.sh)")
def test_verification_in_the_runtime_image(tmp_path, monkeypatch):
    """The stand-in image plays the python3.11 runtime image: the layer is mounted read-only at /opt."""
    monkeypatch.setenv("LAYERBUILD_RUNTIME_IMAGE", STANDIN)
    recipe = parse_recipe({"name": "dv", "packages": ["pymysql"], "python": ["3.11"]}, "dv.yaml")
    outcome = build_target(recipe, make_target("3.11", "x86_64"), out_dir=tmp_path / "dist", verify_with="docker")
    record = manifest_of(outcome)["verification"]
    assert manifest_of(outcome)["verified"] is True and record["how"] == "docker"
    assert record["where"] == f"docker {STANDIN}" and record["read_only"] is True


def test_verify_with_and_no_verify_contradict(invoke, tmp_path):
    result = invoke("build", "pymysql", "--no-verify", "--verify-with", "local", "--out", tmp_path)
    assert result.exit_code == 2 and "--verify-with and --no-verify contradict each other" in result.stderr


def test_modules_to_verify_are_the_distributions_then_the_recipes_imports(tmp_path):
    site = tmp_path / "python"
    for name, tops in {"alpha-1.0": "alpha\n", "beta-2.0": "beta\n_private\n"}.items():
        info = site / f"{name}.dist-info"
        info.mkdir(parents=True)
        (info / "top_level.txt").write_text(tops)
        (site / name.split("-")[0]).mkdir()
    assert verify.modules_to_verify(tmp_path, "3.12", ["beta.sub", "alpha"]) == ["alpha", "beta", "beta.sub"]


@needs_py
def test_a_way_asked_for_by_name_that_cannot_run_fails_and_a_cached_build_is_verified_again(invoke, write_recipe, tmp_path):
    recipe = write_recipe(name="vw", packages=["six"], python=[PY])
    out = tmp_path / "dist"
    result = invoke("build", recipe, "--out", out, "--verify-with", "qemu")  # x86_64 on x86_64: nothing to emulate
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --verify-with qemu: cannot verify python{PY}-x86_64 this way: ") and "no emulation needed" in line
    assert not out.exists() or not list(out.glob("*.zip"))
    first = invoke("build", recipe, "--out", out, "--json")  # verified locally, cached
    assert first.exit_code == 0 and json.loads(first.stdout)[0]["verification"]["how"] == "local"
    again = invoke("build", recipe, "--out", out, "--json", "--verify-with", "local")
    assert json.loads(again.stdout)[0]["status"] == "cached"  # verified that way already
    if STANDIN:
        docker = invoke("build", recipe, "--out", out, "--json", "--verify-with", "docker",
                        env={"LAYERBUILD_RUNTIME_IMAGE": STANDIN})  # fmt: skip
        [outcome] = json.loads(docker.stdout)
        assert outcome["status"] == "built" and outcome["verification"]["how"] == "docker", docker.stderr


@needs_py
def test_build_json_says_whether_and_how_each_target_was_verified(invoke, write_recipe, tmp_path):
    recipe = write_recipe(name="js", packages=["six"], python=[PY])
    result = invoke("build", recipe, "--out", tmp_path / "dist", "--json")
    [outcome] = json.loads(result.stdout)
    assert outcome["verified"] is True and outcome["verification"]["modules"] == ["six"]
    assert outcome["audit"]["ok"] is True
