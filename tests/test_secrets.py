"""Secrets: AWS credentials never leave the host environment.

Fake credentials with distinctive markers are set for every command; they must appear in no
output, lock, manifest or layer. Package build scripts run by uv must not receive AWS_* at all
(proved with a real sdist whose in-tree build backend records its environment). Layers never pick
up .aws/, .env or unrelated files from the recipe directory, the working directory or HOME.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import reliability_figures
from faultproxy import PackageIndex, in_tree_sdist

from layerbuild.backends.wheels.uv import uv_env

ACCESS_KEY = "AKIAFAKEMARKERQ7Z3X9"
SECRET_KEY = "fakeSecretMARKER/k9Qp2Vw7+Zr4Ht8Lm1Ns6Bx3Cv5Df0"
SESSION_TOKEN = "FwoFakeSessionTokenMARKERzz9yy8xx7ww6vv5uu4tt3ss2rr1qq0"
SECRETS = (SECRET_KEY, SESSION_TOKEN)  # the access key id is not secret, but is checked where cheap too
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
    "AWS_DEFAULT_REGION": "us-east-1",
}

# An sdist whose PEP 517 backend (in-tree, no build requirements) records the environment it got.
ENV_DUMP = 'open(os.environ["LAYERBUILD_ENV_DUMP"], "a", encoding="utf-8").write(json.dumps(dict(os.environ)) + "\\n")'


def assert_no_secrets(text: str, where: str) -> None:
    reliability_figures.scan_for_secrets(text, SECRETS + (ACCESS_KEY,), where)


def zip_texts(path: Path) -> str:
    """Every entry name and every entry's decompressed bytes (markers hide inside deflate otherwise)."""
    parts = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            parts.append(info.filename)
            parts.append(archive.read(info).decode("utf-8", "replace"))
    return "\n".join(parts)


def scan_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            assert_no_secrets(data.decode("utf-8", "replace"), str(path))
            if path.suffix == ".zip":
                assert_no_secrets(zip_texts(path), str(path))


def test_uv_env_strips_every_aws_variable(monkeypatch):
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds")
    monkeypatch.setenv("NOT_AWS_SETTING", "kept")
    env = uv_env()
    assert not [k for k in env if k.startswith("AWS_")]
    assert env["NOT_AWS_SETTING"] == "kept"


def test_recipe_cannot_smuggle_aws_variables_into_builds(write_recipe, invoke, tmp_path):
    path = write_recipe("name: smuggle\npackages: [six]\nbuild_env:\n  AWS_SECRET_ACCESS_KEY: x\n", filename="smuggle.yaml")
    result = invoke("build", path, "--out", tmp_path / "dist")
    reliability_figures.count("bad_inputs", detail="recipe smuggling AWS_*")
    assert result.exit_code == 1
    assert "build_env.AWS_SECRET_ACCESS_KEY" in result.stderr and "never passed" in result.stderr


@pytest.fixture
def hostile_home(tmp_path, monkeypatch):
    """Credentials and dotfiles in HOME, the working directory and beside the recipe."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    recipes = tmp_path / "recipes"
    for folder in (home, cwd, recipes):
        (folder / ".aws").mkdir(parents=True)
        (folder / ".aws" / "credentials").write_text(f"[default]\naws_secret_access_key = {SECRET_KEY}\n")
        (folder / ".env").write_text(f"AWS_SESSION_TOKEN={SESSION_TOKEN}\n")
        (folder / "notes.txt").write_text("unrelated file beside the recipe\n")
        (folder / "python").mkdir()  # looks like a layer tree; must not be picked up
        (folder / "python" / "stray.py").write_text(f"KEY = {SECRET_KEY!r}\n")
    monkeypatch.chdir(cwd)
    return {"HOME": str(home), **AWS_ENV}


@pytest.mark.network
def test_build_and_lock_never_show_or_package_credentials(write_recipe, invoke, tmp_path, hostile_home):
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    path = write_recipe(name="secretive", packages=["six"])
    out = tmp_path / "dist"
    results = [invoke("lock", path, env=hostile_home), invoke("build", path, "--out", out, env=hostile_home),
               invoke("build", path, "--out", out, "--json", env=hostile_home)]  # fmt: skip
    for result in results:
        assert result.exit_code == 0, result.stderr
        assert_no_secrets(result.stdout + result.stderr, "command output")
    scan_tree(out)
    scan_tree(path.parent / "secretive.lock")
    with zipfile.ZipFile(out / "secretive-python3.12-x86_64.zip") as archive:
        names = archive.namelist()
    assert all(n.startswith("python/") for n in names), names
    top = {n.split("/")[1] for n in names if n != "python/"}
    assert all(t.startswith("six") or t == "__pycache__" for t in top), top  # only what six installs
    assert not [n for n in names if ".aws" in n or n.endswith((".env", "notes.txt", "stray.py"))]
    manifest = json.loads((out / "secretive-python3.12-x86_64.json").read_text())
    assert str(tmp_path) not in json.dumps(manifest)


def test_package_build_scripts_get_no_aws_variables(write_recipe, invoke, tmp_path, monkeypatch):
    """A real sdist built by uv during the build records its environment: no AWS_* in it."""
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    dump = tmp_path / "env-dump.jsonl"
    with PackageIndex() as index:
        index.add_sdist("envdump", "1.0", in_tree_sdist("envdump", "1.0", before_build=ENV_DUMP))
        path = write_recipe(f"name: envdump\npackages: [envdump]\nindex_url: {index.simple_url}\n", filename="envdump.yaml")
        env = {**AWS_ENV, "LAYERBUILD_ENV_DUMP": str(dump), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
        result = invoke("build", path, "--out", tmp_path / "dist", env=env)
    assert result.exit_code == 0, result.stderr
    assert_no_secrets(result.stdout + result.stderr, "command output")
    recorded = [json.loads(line) for line in dump.read_text().splitlines()]
    assert recorded, "the build backend never ran"
    for environ in recorded:
        assert environ.get("LAYERBUILD_ENV_DUMP") == str(dump)  # the dump works: other variables pass
        assert not [k for k in environ if k.startswith("AWS_")], sorted(k for k in environ if k.startswith("AWS_"))
    scan_tree(tmp_path / "dist")


# --- the Docker backend: containers get an environment built from scratch ----------------------

STANDIN_IMAGE = "layerbuild-standin-build:bookworm"  # tests/images/build-standin.sh


def test_container_env_is_built_from_scratch_without_aws(monkeypatch):
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    from layerbuild.backends.docker.backend import container_env
    from layerbuild.backends.indexes import IndexSettings

    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOST_ONLY_MARKER", "host")
    env = container_env(IndexSettings(), (("AWS_SESSION_TOKEN", SESSION_TOKEN), ("CFLAGS", "-O1")), ca_mounted=True)
    assert not [k for k in env if k.upper().startswith("AWS_")]
    assert "HOST_ONLY_MARKER" not in env and "HOME" not in env  # nothing copied from the host
    assert env["CFLAGS"] == "-O1"
    assert_no_secrets(json.dumps(env), "container environment")


def test_container_mounts_expose_no_home_or_recipe_directory(tmp_path):
    from layerbuild.backends.docker.backend import _mounts

    work = tmp_path / "layerbuild-work"
    mounts = _mounts(tmp_path / "ca.pem", "layerbuild-pip-cache", work)
    sources = [m.source for m in mounts if not m.volume]
    assert sorted(sources) == sorted([str((tmp_path / "ca.pem").resolve()), str(work)])
    assert not any(s in (str(Path.home()), "/") for s in sources)


@pytest.mark.docker
def test_a_real_container_sees_no_aws_variables(monkeypatch):
    """The environment layerbuild hands Docker, as a real container sees it (`env` inside it)."""
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    from layerbuild.backends.docker.backend import container_env
    from layerbuild.backends.docker.engine import Engine, RunSpec
    from layerbuild.backends.indexes import IndexSettings
    from layerbuild.model.runtimes import DOCKER_PLATFORM

    try:
        engine = Engine.connect()
    except Exception as exc:  # no engine here: CI has one
        pytest.skip(f"no Docker engine: {exc}")
    if engine.local_image(STANDIN_IMAGE) is None:
        pytest.skip(f"{STANDIN_IMAGE} not built (tests/images/build-standin.sh)")
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    env = container_env(IndexSettings(), (), ca_mounted=False)
    result = engine.run(RunSpec(STANDIN_IMAGE, ["env"], DOCKER_PLATFORM["x86_64"], environment=env, timeout=120))
    assert result.exit_code == 0, result.output
    seen = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert "PIP_INDEX_URL" in seen  # the listing is real
    assert not [k for k in seen if k.startswith("AWS_")], seen
    assert_no_secrets(result.output, "container env")


# --- audit, stack and klayers-lookup with credentials in the environment ------------------------


def test_audit_stack_and_klayers_never_show_credentials(invoke, tmp_path, httpserver_ipv4, monkeypatch):
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    from conftest import HOST_PYTHON
    from klayers_server import serve_klayers
    from test_hostile_zips import zip_bytes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    layer = tmp_path / "layer.zip"
    layer.write_bytes(zip_bytes([("python/", None), ("python/mod.py", b"X = 1\n")]))
    env = dict(AWS_ENV, LAYERBUILD_KLAYERS_URL=serve_klayers(httpserver_ipv4))
    results = [
        invoke("audit", layer, "--python", HOST_PYTHON, "--arch", "x86_64", "--json", env=env),
        invoke("stack", layer, env=env),
        invoke("klayers-lookup", "us-east-1", "3.12", "--format", "sam", env=env),
        invoke("klayers-lookup", "us-east-1", "3.12", "--json", env=env),
    ]
    for result in results:
        assert result.exit_code in (0, 1), result.output
        assert "Traceback" not in result.output
        assert_no_secrets(result.stdout + result.stderr, "command output")
    scan_tree(tmp_path / "xdg")  # the Klayers answer cache


@pytest.fixture(scope="module")
def secrets_moto():
    from faultproxy import free_port
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.network
def test_publish_never_shows_or_writes_credentials(invoke, write_recipe, tmp_path, monkeypatch, secrets_moto):
    reliability_figures.count("faults", detail="fake AWS credentials planted")
    from layerbuild.cli.main import main

    assert "publish" in main.list_commands(None)  # commands load lazily (cli.LAZY_COMMANDS)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dist"
    path = write_recipe(name="secretpub", packages=["six"])
    assert invoke("build", path, "--out", out).exit_code == 0
    zip_path = out / "secretpub-python3.12-x86_64.zip"
    env = dict(AWS_ENV, AWS_ENDPOINT_URL=secrets_moto)
    results = [invoke("publish", zip_path, "--region", "us-east-1", "--dry-run", env=env),
               invoke("publish", zip_path, "--region", "us-east-1", "--share", "public", "--json", env=env),
               invoke("publish", zip_path, "--region", "us-east-1", "--format", "sam", env=env)]  # fmt: skip
    for result in results:
        assert result.exit_code == 0, result.output
        assert_no_secrets(result.stdout + result.stderr, "publish output")
    assert "arn:aws:lambda:us-east-1:" in results[1].stdout
    scan_tree(tmp_path)  # dist/ (zip, manifest, any arns.json), the recipe and its lock
