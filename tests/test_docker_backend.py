"""The docker backend against a real Docker engine and the stand-in build image.

Public registries are unreachable here, so the build image is tests/images/build-standin.sh's Debian
bookworm (Python 3.11): every docker test targets python3.11 x86_64. `.ci/run` starts the engine,
builds the image and exports LAYERBUILD_TEST_BUILD_IMAGE. With CI=true a missing engine or image
fails these tests loudly; locally they skip with the reason. Packages come from the real index.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from layerbuild.backends.base import BuildRequest
from layerbuild.backends.docker import backend as docker_backend
from layerbuild.backends.indexes import IndexSettings
from layerbuild.model.lockfile import parse_lock
from layerbuild.model.recipe import parse_recipe
from layerbuild.model.runtimes import make_target

DEFAULT_STANDIN = "layerbuild-standin-build:bookworm"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TARGET = make_target("3.11", "x86_64")
# A C-extension sdist with no wheels at all (so `auto` must compile it), small and quick to build.
SDIST_ONLY = "crcmod==1.7"
# markupsafe ships wheels; PIP_NO_BINARY forces the sdist and CIBUILDWHEEL=1 makes a failed C build an error
# instead of its silent pure-Python fallback.
FORCED_SOURCE_ENV = {"PIP_NO_BINARY": "markupsafe", "CIBUILDWHEEL": "1"}


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"docker tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # no engine: skip locally, fail in CI
        _unavailable(f"no Docker engine answers ({' '.join(str(exc).split())[:200]})")
    return client


@pytest.fixture(scope="session")
def standin_image(docker_client):
    import docker

    tag = os.environ.get("LAYERBUILD_TEST_BUILD_IMAGE") or DEFAULT_STANDIN
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        _unavailable(f"stand-in build image {tag} is missing: run tests/images/build-standin.sh (as root)")
    return tag


@pytest.fixture(scope="session")
def session_pip_volume(docker_client):
    """A pip cache volume of this test session's own (removed at the end): tests never touch the user's."""
    name = f"layerbuild-test-pip-cache-{uuid.uuid4().hex[:8]}"
    yield name
    _remove_volume(docker_client, name)


def _remove_volume(client, name):
    import docker

    try:
        client.volumes.get(name).remove(force=True)
    except docker.errors.DockerException:
        pass


@pytest.fixture
def docker_env(monkeypatch, standin_image, session_pip_volume):
    monkeypatch.setenv("LAYERBUILD_BUILD_IMAGE", standin_image)
    monkeypatch.setenv("LAYERBUILD_PIP_CACHE_VOLUME", session_pip_volume)
    return standin_image


def _recipe(write_recipe, **fields):
    fields.setdefault("name", "sample")
    fields.setdefault("python", ["3.11"])
    return write_recipe(**fields)


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _manifest(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}-python3.11-x86_64.json").read_text())


def _request(tmp_path, **fields) -> BuildRequest:
    fields.setdefault("name", "direct")
    fields.setdefault("python", ["3.11"])
    recipe = parse_recipe(fields, "direct.yaml")
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    return BuildRequest(recipe=recipe, target=TARGET, work_dir=work, index=IndexSettings.for_recipe(recipe),
                        out_dir=tmp_path / "out")  # fmt: skip


def _host_user() -> tuple[int, int]:
    """The uid:gid the build runs as: a non-root one when the tests run as root."""
    return (4321, 4321) if os.geteuid() == 0 else (os.getuid(), os.getgid())


# ---- pure logic -------------------------------------------------------------------------------------


def test_image_precedence_cli_then_env_then_recipe_then_default():
    env = {"LAYERBUILD_BUILD_IMAGE": "from-env"}
    assert docker_backend.choose_image("from-cli", env, "from-recipe", TARGET)[0] == "from-cli"
    assert docker_backend.choose_image(None, env, "from-recipe", TARGET)[0] == "from-env"
    assert docker_backend.choose_image(None, {}, "from-recipe", TARGET)[0] == "from-recipe"
    assert docker_backend.choose_image(None, {}, None, TARGET)[0] == "public.ecr.aws/sam/build-python3.11:latest-x86_64"
    arm = make_target("3.12", "arm64")
    assert docker_backend.choose_image(None, {}, None, arm)[0] == "public.ecr.aws/sam/build-python3.12:latest-arm64"


def test_container_env_is_built_from_scratch_with_index_and_ca(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.setenv("HOME", "/home/someone")
    index = IndexSettings("https://mirror.example/simple", ("https://extra.example/simple",))
    env = docker_backend.container_env(index, (("CFLAGS", "-O3"), ("AWS_REGION", "x")), ca_mounted=True)
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["PIP_EXTRA_INDEX_URL"] == "https://extra.example/simple"
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        assert env[name] == docker_backend.CA_PATH
    assert env["CFLAGS"] == "-O3"  # the recipe's build_env wins over the defaults
    assert not [k for k in env if k.startswith("AWS_")]
    assert "HOME" not in env and "host-secret" not in env.values()
    assert "PIP_CERT" not in docker_backend.container_env(index, (), ca_mounted=False)


def test_container_mounts_only_the_work_dir_the_ca_bundle_and_the_pip_cache(tmp_path):
    mounts = docker_backend._mounts(Path("/etc/ssl/certs/ca-certificates.crt"), "layerbuild-pip-cache", tmp_path / "work")
    assert {(m.target, m.read_only, m.volume) for m in mounts} == {
        ("/pip-cache", False, True), (docker_backend.CA_PATH, True, False), ("/work", False, False)}
    assert str(Path.home()) not in {m.source for m in mounts}


@pytest.mark.parametrize(
    "output, expected",
    [
        ("E: Unable to locate package libnope-dev\n", ["libnope-dev"]),
        ("No match for argument: libnope-devel\nError: Unable to find a match: libnope-devel\n", ["libnope-devel"]),
        ("No package libnope-devel available.\nError: Nothing to do\n", ["libnope-devel"]),
        ("error: No package matches 'libnope'\n", ["libnope"]),
    ],
)
def test_missing_system_packages_are_named_for_each_package_manager(output, expected):
    assert docker_backend.missing_system_packages(output) == expected


def test_compile_failure_names_the_package_and_the_compiler_error():
    output = (
        "Building wheels for collected packages: markupsafe\n  Building wheel for markupsafe (pyproject.toml): started\n"
        "  error: subprocess-exited-with-error\n"
        "      gcc: error: unrecognized command-line option '--layerbuild-no-such-flag'\n"
        "      error: command '/usr/bin/gcc' failed with exit code 1\n"
        "ERROR: Failed to build installable wheels for some pyproject.toml based projects (markupsafe)\n"
    )
    package, reason = docker_backend.compile_failure(output)
    assert package == "markupsafe"
    assert "unrecognized command-line option" in reason
    assert docker_backend.compile_failure("Successfully installed six-1.17.0\n") is None


def test_libs_matched_under_several_names_keep_one_copy_under_the_soname(tmp_path):
    import glob

    real = sorted(glob.glob("/usr/lib/*-linux-gnu/libz.so.1.*") + glob.glob("/lib*/libz.so.1.*") + glob.glob("/usr/lib64/libz.so.1.*"))
    if not real:
        pytest.skip("no libz.so.1.* on this machine to copy")
    lib = tmp_path / "lib"
    lib.mkdir()
    data = Path(real[0]).read_bytes()
    for name in ("libz.so", "libz.so.1", Path(real[0]).name):
        (lib / name).write_bytes(data)
    (lib / "libother.so.3").write_bytes(b"not an ELF file")
    assert docker_backend.dedupe_libs(lib) == ["libother.so.3", "libz.so.1"]
    assert sorted(p.name for p in lib.iterdir()) == ["libother.so.3", "libz.so.1"]


# ---- engine errors that need no engine ---------------------------------------------------------------


@pytest.fixture
def closed_docker_socket(tmp_path, monkeypatch):
    """DOCKER_HOST naming a unix socket nobody listens on (connection refused)."""
    path = tmp_path / "closed-docker.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    return path


def test_engine_not_running_is_one_line_and_writes_nothing(invoke, write_recipe, tmp_path, closed_docker_socket):
    path = _recipe(write_recipe, packages=["six==1.17.0"])
    out = tmp_path / "out"
    result = invoke("build", path, "--backend", "docker", "--out", out, "--no-cache")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot reach a Docker engine at unix://")
    assert str(closed_docker_socket) in error and "start Docker" in error
    assert "Traceback" not in result.output
    assert not list(out.glob("*.zip")) and not list(out.glob("*.json"))


def test_auto_needing_docker_without_engine_names_the_requirement(invoke, write_recipe, tmp_path, closed_docker_socket):
    path = _recipe(write_recipe, packages=[SDIST_ONLY])
    out = tmp_path / "out"
    result = invoke("build", path, "--out", out, "--no-cache")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: crcmod needs compiling for python3.11-x86_64")
    assert "start Docker" in error and "pin a version of crcmod" in error
    assert not list(out.glob("*.zip"))


def test_auto_chooses_wheels_for_pymysql_without_any_engine(invoke, write_recipe, tmp_path, closed_docker_socket):
    path = _recipe(write_recipe, name="pymysql", packages=["pymysql==1.1.1"])
    out = tmp_path / "out"
    result = invoke("build", path, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    assert _manifest(out, "pymysql")["backend"] == "wheels"


# ---- real builds in the stand-in image -------------------------------------------------------------


def _run_in_image(client, image, layer_dir: Path, code: str, user="65534:65534") -> str:
    """Run the image's own python with the layer mounted read-only at /opt, as Lambda does."""
    output = client.containers.run(
        image, ["python3", "-c", code], remove=True, user=user, network_mode="none",
        volumes={str(layer_dir): {"bind": "/opt", "mode": "ro"}}, environment={"LD_LIBRARY_PATH": "/opt/lib"},
    )  # fmt: skip
    return output.decode()


def _extract(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@pytest.mark.docker
def test_forced_source_build_with_lib_is_importable_by_the_image_python(invoke, write_recipe, tmp_path, docker_env, docker_client):
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    path = _recipe(write_recipe, name="speedups", packages=["markupsafe==3.0.2"], libs=["libz.so.1"],
                   build_env=FORCED_SOURCE_ENV, imports=["markupsafe"])  # fmt: skip
    out = tmp_path / "out"
    result = invoke("build", path, "--backend", "docker", "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    zip_path = out / "speedups-python3.11-x86_64.zip"
    names = _zip_names(zip_path)
    assert "python/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so" in names
    assert "lib/libz.so.1" in names
    manifest = _manifest(out, "speedups")
    assert manifest["backend"] == "docker"
    assert {p["name"].lower(): p["version"] for p in manifest["packages"]} == {"markupsafe": "3.0.2"}

    # The library is the real file (symlink resolved) under its soname.
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo("lib/libz.so.1")
        assert (info.external_attr >> 16) & 0o170000 != 0o120000  # not a symlink entry
        elf = ELFFile(io.BytesIO(archive.read(info)))
        sonames = [t.soname for s in elf.iter_sections() if isinstance(s, DynamicSection)
                   for t in s.iter_tags() if t.entry.d_tag == "DT_SONAME"]  # fmt: skip
        assert sonames == ["libz.so.1"]

    layer = _extract(zip_path, tmp_path / "opt")
    code = (
        "import sys, ctypes; sys.path.insert(0, '/opt/python'); import markupsafe; from markupsafe import _speedups; "
        "assert markupsafe.__file__.startswith('/opt/python/'), markupsafe.__file__; "
        "print(markupsafe.escape('<a>'), ctypes.CDLL('libz.so.1')._name)"
    )
    assert _run_in_image(docker_client, docker_env, layer, code).split() == ["&lt;a&gt;", "libz.so.1"]


@pytest.mark.docker
def test_auto_chooses_docker_for_an_sdist_only_c_extension(invoke, write_recipe, tmp_path, docker_env, docker_client):
    path = _recipe(write_recipe, name="crc", packages=[SDIST_ONLY])
    out = tmp_path / "out"
    result = invoke("build", path, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    assert "switching to the docker backend" in result.stderr
    assert _manifest(out, "crc")["backend"] == "docker"
    zip_path = out / "crc-python3.11-x86_64.zip"
    assert "python/crcmod/_crcfunext.cpython-311-x86_64-linux-gnu.so" in _zip_names(zip_path)
    code = ("import sys; sys.path.insert(0, '/opt/python'); import crcmod.crcmod, crcmod._crcfunext; "
            "print(sys.modules['crcmod.crcmod']._usingExtension)")
    assert _run_in_image(docker_client, docker_env, _extract(zip_path, tmp_path / "opt"), code).strip() == "True"

    # Same inputs, same bytes (compiles carry no build paths or timestamps).
    again = invoke("build", path, "--out", tmp_path / "again", "--no-cache")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / zip_path.name).read_bytes() == zip_path.read_bytes()


@pytest.mark.docker
def test_files_are_owned_by_the_host_user(tmp_path, docker_env):
    uid, gid = _host_user()
    request = _request(tmp_path, packages=[SDIST_ONLY], libs=["libz.so.1"])
    tree = docker_backend.build(request, user=(uid, gid))
    files = [p for p in tree.root.rglob("*")]
    assert any(p.name.endswith(".so") for p in files) and (tree.root / "lib" / "libz.so.1").is_file()
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in files} == {(uid, gid)}
    assert tree.backend == "docker" and [p.version for p in tree.packages] == ["1.7"]
    lock = parse_lock(tree.lock_text)
    assert lock.backend == "docker" and lock.pins == {"crcmod": "1.7"} and "--hash=sha256:" in lock.body


@pytest.mark.docker
def test_lock_in_the_image_then_second_build_downloads_nothing(invoke, write_recipe, tmp_path, docker_env, docker_client,
                                                                monkeypatch):  # fmt: skip
    volume = f"layerbuild-test-pip-cache-{uuid.uuid4().hex[:8]}"  # empty: the first build must download
    monkeypatch.setenv("LAYERBUILD_PIP_CACHE_VOLUME", volume)
    try:
        path = _recipe(write_recipe, name="crc", packages=[SDIST_ONLY], backend="docker")
        result = invoke("lock", path)
        assert result.exit_code == 0, result.output
        lock_file = path.parent / "crc.lock" / "python3.11-x86_64.txt"
        lock = parse_lock(lock_file.read_text())
        assert lock.backend == "docker" and lock.pins == {"crcmod": "1.7"} and "--hash=sha256:" in lock.body

        logs = []
        for _ in range(2):
            request = _request(tmp_path, packages=[SDIST_ONLY], backend="docker")
            request.lock = lock
            docker_backend.build(request, user=_host_user())
            logs.append((request.work_dir / "docker" / "container.log").read_text())
        assert "Downloading crcmod-1.7.tar.gz" in logs[0]
        assert "Downloading" not in logs[1], logs[1]
        assert "Using cached crcmod-1.7-cp311-cp311-linux_x86_64.whl" in logs[1]
    finally:
        _remove_volume(docker_client, volume)


@pytest.mark.docker
def test_installing_from_a_tampered_lock_fails_the_hash_check(tmp_path, docker_env):
    request = _request(tmp_path, packages=["six==1.17.0"])
    request.lock = parse_lock("six==1.17.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(Exception) as caught:
        docker_backend.build(request, user=_host_user())
    assert type(caught.value).__name__ == "LockError"
    assert str(caught.value).startswith("hash mismatch installing in ")
    assert not (tmp_path / "out" / "direct-python3.11-x86_64.zip").exists()


# ---- error paths on a real engine ------------------------------------------------------------------


def _failing_build(invoke, path, out, *args):
    result = invoke("build", path, "--out", out, "--no-cache", *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert not list(out.glob("*.zip")) and not list(out.glob("*.json")) and not list(out.glob("*.tmp"))
    return lines[-1]


@pytest.mark.docker
def test_missing_image_that_cannot_be_pulled(invoke, write_recipe, tmp_path, docker_env):
    path = _recipe(write_recipe, packages=["six==1.17.0"], backend="docker")
    image = "127.0.0.1:1/layerbuild-missing:none"  # a registry on a closed local port: refused at once
    error = _failing_build(invoke, path, tmp_path / "out", "--image", image)
    assert error.startswith(f"error: build image '{image}' is not on the Docker engine and could not be pulled for linux/amd64")
    assert "--image or LAYERBUILD_BUILD_IMAGE" in error


@pytest.mark.docker
def test_unknown_system_package(invoke, write_recipe, tmp_path, docker_env):
    path = _recipe(write_recipe, packages=["six==1.17.0"], system_packages=["layerbuild-no-such-package"])
    out = tmp_path / "out"
    error = _failing_build(invoke, path, out)
    assert "field 'system_packages': apt-get in build image" in error
    assert "cannot find 'layerbuild-no-such-package'" in error
    log = out / "sample-python3.11-x86_64.build.log"
    assert error.endswith(f"(log: {log})") and "Unable to locate package layerbuild-no-such-package" in log.read_text()


@pytest.mark.docker
def test_compile_failure_prints_the_log_path(invoke, write_recipe, tmp_path, docker_env):
    env = {**FORCED_SOURCE_ENV, "CFLAGS": "--layerbuild-no-such-flag"}
    path = _recipe(write_recipe, name="broken", packages=["markupsafe==3.0.2"], backend="docker", build_env=env)
    out = tmp_path / "out"
    error = _failing_build(invoke, path, out)
    log = out / "broken-python3.11-x86_64.build.log"
    assert error.startswith("error: markupsafe failed to compile in ")
    assert "unrecognized command-line option" in error
    assert error.endswith(f"the last lines of the compiler output are in {log}")
    assert "--layerbuild-no-such-flag" in log.read_text()


@pytest.mark.docker
def test_image_python_must_match_the_target(invoke, write_recipe, tmp_path, docker_env):
    path = _recipe(write_recipe, packages=["six==1.17.0"], python=["3.12"], backend="docker")
    error = _failing_build(invoke, path, tmp_path / "out")
    assert f"error: build image '{docker_env}' has Python 3.11" in error
    assert "but the target is python3.12" in error


@pytest.mark.docker
def test_image_architecture_must_match_the_target(invoke, write_recipe, tmp_path, docker_env):
    path = _recipe(write_recipe, packages=["six==1.17.0"], architectures=["arm64"], backend="docker")
    error = _failing_build(invoke, path, tmp_path / "out")
    assert f"error: build image '{docker_env}' (LAYERBUILD_BUILD_IMAGE) is linux/amd64 but python3.11-arm64 needs linux/arm64" in error


@pytest.mark.docker
def test_lib_that_matches_nothing(invoke, write_recipe, tmp_path, docker_env):
    path = _recipe(write_recipe, packages=["six==1.17.0"], libs=["liblayerbuildnothing.so*"])
    error = _failing_build(invoke, path, tmp_path / "out")
    assert "field 'libs': 'liblayerbuildnothing.so*' matches no shared library" in error
    assert "add the system package that provides it to system_packages" in error


def _aarch64_exit0() -> bytes:
    """A minimal static aarch64 ELF executable that calls exit(0)."""
    code = struct.pack("<3I", 0xD2800000, 0xD2800BA8, 0xD4000001)  # mov x0, #0; mov x8, #93 (exit); svc #0
    base, entry = 0x400000, 0x400000 + 64 + 56
    header = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, 183, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    size = 64 + 56 + len(code)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + program + code


@pytest.fixture
def arm64_image(docker_client):
    """A tiny linux/arm64 image (its /bin/sh exits 0); skips when the engine can already run arm64."""
    import docker

    tag = "layerbuild-test-arm64:scratch"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (("Dockerfile", b"FROM scratch\nCOPY sh /bin/sh\n", 0o644), ("sh", _aarch64_exit0(), 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, platform="linux/arm64", tag=tag, rm=True)
    try:
        docker_client.containers.run(tag, ["/bin/sh"], remove=True, platform="linux/arm64")
        pytest.skip("this engine has arm64 emulation installed: the missing-emulation error cannot happen here")
    except docker.errors.ContainerError:
        pass
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_missing_emulation_for_arm64_says_how_to_install_it(invoke, write_recipe, tmp_path, docker_env, arm64_image,
                                                             monkeypatch, docker_client):  # fmt: skip
    volume = f"layerbuild-test-pip-cache-{uuid.uuid4().hex[:8]}"  # new: preparing it runs the arm64 image first
    monkeypatch.setenv("LAYERBUILD_PIP_CACHE_VOLUME", volume)
    path = _recipe(write_recipe, packages=["six==1.17.0"], architectures=["arm64"], backend="docker")
    try:
        error = _failing_build(invoke, path, tmp_path / "out", "--image", arm64_image)
    finally:
        _remove_volume(docker_client, volume)
    assert "cannot run linux/arm64 containers on its x86_64 machine: no emulation for arm64 is installed" in error
    assert "tonistiigi/binfmt --install arm64" in error and "qemu-user-static" in error


@pytest.mark.docker
def test_system_packages_are_installed_and_their_libs_copied(invoke, write_recipe, tmp_path, docker_env):
    # libyaml is not in the stand-in: apt-get must install it before its library can be copied.
    path = _recipe(write_recipe, name="withyaml", packages=["six==1.17.0"], system_packages=["libyaml-0-2"],
                   libs=["libyaml-0.so.*"])  # fmt: skip
    out = tmp_path / "out"
    result = invoke("build", path, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    names = _zip_names(out / "withyaml-python3.11-x86_64.zip")
    # The glob matches the soname link and the real file: one copy is kept, under the soname the loader wants.
    assert [n for n in names if n.startswith("lib/") and not n.endswith("/")] == ["lib/libyaml-0.so.2"]
    assert _manifest(out, "withyaml")["backend"] == "docker"


@pytest.mark.docker
def test_containers_left_by_killed_builds_are_removed_by_the_next_connection(docker_client, standin_image):
    """A SIGKILLed build cannot remove its (maybe still running) container; the next build on this host does,
    and never touches containers of live processes, of other hosts, or of images derived by a build."""
    import subprocess
    import sys

    import docker

    from layerbuild.backends.docker.engine import OWNER_LABEL, Engine, RunSpec

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan = docker_client.containers.create(standin_image, ["sleep", "300"], labels={OWNER_LABEL: f"{host}:{dead.pid}"})
    orphan.start()
    kept = [docker_client.containers.create(standin_image, ["true"], labels={OWNER_LABEL: owner})
            for owner in (f"{host}:{os.getpid()}", f"another-host:{dead.pid}")]  # fmt: skip
    repository, tag = "layerbuild-test-owner", uuid.uuid4().hex[:8]
    try:
        engine = Engine.connect()
        present = {c.id for c in docker_client.containers.list(all=True)}
        assert orphan.id not in present
        assert all(c.id in present for c in kept)
        # A committed image must not carry the committing process as owner into its own containers.
        platform = "linux/" + docker_client.images.get(standin_image).attrs["Architecture"]
        result = engine.run(RunSpec(standin_image, ["true"], platform), commit_as=(repository, tag, []))
        assert result.exit_code == 0
        assert not docker_client.images.get(f"{repository}:{tag}").labels.get(OWNER_LABEL)
        # The run's own container (labelled with this process) was removed when it finished.
        ours = docker_client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={host}:{os.getpid()}"})
        assert [c.id for c in ours] == [kept[0].id]
    finally:
        for container in [orphan, *kept]:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
        try:
            docker_client.images.remove(f"{repository}:{tag}")
        except docker.errors.DockerException:
            pass


@pytest.mark.docker
def test_a_sigkilled_docker_build_is_cleaned_up_by_the_next_build(write_recipe, tmp_path, docker_env, docker_client):
    """SIGKILL while the build container runs: the container survives its owner (and may keep running);
    the next build removes it and the killed build's temp files, and publishes a good pair."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    from layerbuild.backends.docker.engine import OWNER_LABEL

    path = _recipe(write_recipe, name="killed", packages=[SDIST_ONLY], backend="docker")
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "build", str(path), "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    owner = f"{socket.gethostname()}:{proc.pid}"
    containers = []
    try:
        deadline = time.monotonic() + 300  # bounded: the image derivation and the build both run in containers
        while time.monotonic() < deadline and proc.poll() is None:
            containers = docker_client.containers.list(filters={"label": f"{OWNER_LABEL}={owner}", "status": "running"})
            if containers:
                break
            time.sleep(0.2)
        assert containers, "the build never started a container"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = docker_client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})
        assert left, "the killed build's container vanished by itself: nothing to test"
        assert any(scratch.iterdir()), "the killed build left no work dir: nothing to test"

        again = subprocess.run([sys.executable, "-m", "layerbuild", "build", str(path), "--out", str(out)], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        assert docker_client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}) == []
        assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == [
            "killed-python3.11-x86_64.json", "killed-python3.11-x86_64.zip"]
        assert not [p for p in scratch.iterdir() if f"-{proc.pid}-" in p.name]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for container in docker_client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
            container.remove(force=True)
