import json

import pytest

from layerbuild.errors import TargetError
from layerbuild.model.runtimes import (
    RUNTIMES,
    get_runtime,
    make_target,
    matrix_rows,
    normalise_python,
)


def test_matrix_covers_lambda_python_runtimes():
    assert list(RUNTIMES) == ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]
    assert get_runtime("3.8").status == "deprecated"
    assert get_runtime("3.9").status == "deprecated"
    assert get_runtime("3.12").status == "supported"


@pytest.mark.parametrize("python,glibc,os_name", [("3.9", (2, 26), "Amazon Linux 2"), ("3.11", (2, 26), "Amazon Linux 2"),
                                                  ("3.12", (2, 34), "Amazon Linux 2023"), ("3.14", (2, 34), "Amazon Linux 2023")])
def test_os_and_glibc(python, glibc, os_name):
    runtime = get_runtime(python)
    assert runtime.glibc == glibc
    assert runtime.os.name == os_name


def test_platform_tags_never_exceed_glibc():
    al2 = get_runtime("3.11").platform_tags("x86_64")
    assert al2[0] == "manylinux_2_26_x86_64"
    assert "manylinux_2_27_x86_64" not in al2 and "manylinux_2_28_x86_64" not in al2
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"} <= set(al2)
    al2023 = get_runtime("3.12").platform_tags("arm64")
    assert al2023[0] == "manylinux_2_34_aarch64"
    assert "manylinux_2_35_aarch64" not in al2023
    # aarch64 manylinux starts at 2.17; the legacy x86 aliases do not exist for it.
    assert al2023[-1] == "manylinux2014_aarch64"
    assert not any(t.startswith(("manylinux1", "manylinux2010")) for t in al2023)


def test_uv_platform_is_at_most_the_runtime_glibc():
    assert get_runtime("3.11").uv_platform("x86_64") == "x86_64-manylinux_2_17"
    assert get_runtime("3.12").uv_platform("arm64") == "aarch64-manylinux_2_34"


def test_images():
    runtime = get_runtime("3.12")
    assert runtime.build_image("arm64") == "public.ecr.aws/sam/build-python3.12:latest-arm64"
    assert runtime.runtime_image("x86_64") == "public.ecr.aws/lambda/python:3.12-x86_64"


@pytest.mark.parametrize("text", ["3.12", "python3.12", "p3.12", "py312", "312"])
def test_normalise_python(text):
    assert normalise_python(text) == "3.12"


def test_unknown_python_suggests_and_lists():
    with pytest.raises(TargetError) as info:
        get_runtime("3.15")
    assert "unknown Python version '3.15'" in str(info.value)
    assert "3.8, 3.9, 3.10, 3.11, 3.12, 3.13, 3.14" in str(info.value)


def test_unknown_architecture():
    with pytest.raises(TargetError, match="unknown architecture 'arm'.*x86_64, arm64.*did you mean 'arm64'"):
        make_target("3.12", "arm")
    assert make_target("3.12", "aarch64").arch == "arm64"


def test_targets_command_table_and_json(invoke):
    table = invoke("targets")
    assert table.exit_code == 0
    assert "python3.11" in table.output and "Amazon Linux 2023" in table.output and "2.26" in table.output
    rows = json.loads(invoke("targets", "--json").output)
    assert len(rows) == len(matrix_rows()) == 14
    row = next(r for r in rows if r["runtime"] == "python3.12" and r["architecture"] == "arm64")
    assert row["glibc"] == "2.34" and row["platform_tags"][0] == "manylinux_2_34_aarch64"


def test_every_runtime_records_its_sdk_and_the_committed_lock_pins_exactly_it():
    from layerbuild.model.lockfile import parse_lock
    from layerbuild.verify import runtimesdk

    for runtime in RUNTIMES.values():
        assert runtime.sdk is not None and runtime.sdk.source, runtime.name
        lock = parse_lock(runtimesdk.lock_text(runtime))
        assert lock.pins["boto3"] == runtime.sdk.boto3 and lock.pins["botocore"] == runtime.sdk.botocore, runtime.name
        assert set(lock.pins) == {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"}
        assert all(lock.hashes[name] for name in lock.pins), runtime.name  # installed with hash checking
        assert lock.pins["urllib3"].startswith("1.")  # Amazon Linux 2's OpenSSL 1.0.2 rules out urllib3 2


def test_the_runtimes_own_packages_come_after_the_layers_in_lambdas_order():
    assert RUNTIMES["3.10"].package_dirs == ("/var/runtime", "/var/lang/lib/python3.10/site-packages")
    assert RUNTIMES["3.12"].package_dirs == ("/var/lang/lib/python3.12/site-packages", "/var/runtime")


@pytest.mark.network
def test_the_runtime_sdk_installs_once_and_imports(tmp_path):
    import subprocess
    import sys

    from layerbuild.verify import runtimesdk

    runtime = RUNTIMES["%d.%d" % sys.version_info[:2]] if "%d.%d" % sys.version_info[:2] in RUNTIMES else RUNTIMES["3.12"]
    site = runtimesdk.ensure(runtime, root=tmp_path / "builds")
    assert runtimesdk.ensure(runtime, root=tmp_path / "builds") == site  # the second time: nothing to do
    assert not (site / "bin").exists()
    code = f"import sys; sys.path.insert(0, {str(site)!r}); import boto3, botocore; print(boto3.__version__)"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == runtime.sdk.boto3, done.stderr
