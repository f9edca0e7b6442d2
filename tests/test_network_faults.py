"""Package index faults: a loopback PEP 503 index that refuses, stalls, errors or truncates.

Builds point the recipe's index_url at it. Expected: uv's bounded retries (UV_HTTP_RETRIES, with
UV_HTTP_TIMEOUT kept small here), then exit 1 with one `error:` line naming the URL and the
reason, and nothing in the output directory. Transient faults are retried through. A tampered
mirror is caught by the lock's hashes, naming the package.
"""

from __future__ import annotations

import json

import pytest
import reliability_figures
from faultproxy import (
    DROP,
    STALL,
    STATUS,
    TRUNCATE,
    FaultPlan,
    PackageIndex,
    closed_url,
    make_wheel,
)

RETRIES = 1
TIMEOUT_S = 2


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


@pytest.fixture
def net_env(tmp_path):
    # A private uv cache: wheels here share names and versions but not bytes across tests.
    return {"UV_HTTP_TIMEOUT": str(TIMEOUT_S), "UV_HTTP_RETRIES": str(RETRIES), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}


def recipe_for(write_recipe, index_url: str, package: str, name: str = "netfault"):
    return write_recipe(f"name: {name}\npackages: [{package}]\nindex_url: {index_url}\n", filename=f"{name}.yaml")


def assert_clean_failure(result, out, *needles):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    # Progress lines are prefixed with the target; the error itself is exactly one line.
    assert all(ln.startswith("[") for ln in lines[:-1]), result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")], list(out.iterdir())
    assert not out.exists() or not list(out.glob("*.tmp"))
    return lines[-1]


def test_loopback_index_serves_a_build(index, invoke, write_recipe, tmp_path, net_env):
    """The control: the same index without faults builds fine (so the failures below are the faults)."""
    index.add("demo-ok", "1.0")
    out = tmp_path / "dist"
    result = invoke("build", recipe_for(write_recipe, index.simple_url, "demo-ok"), "--out", out, env=net_env)
    assert result.exit_code == 0, result.stderr
    assert (out / "netfault-python3.12-x86_64.zip").is_file()


def test_closed_index_fails_naming_the_url(invoke, write_recipe, tmp_path, net_env):
    url = closed_url() + "/simple"
    out = tmp_path / "dist"
    result = invoke("build", recipe_for(write_recipe, url, "demo-closed"), "--out", out, env=net_env)
    reliability_figures.count("faults", detail="index connection refused")
    assert_clean_failure(result, out, url + "/demo-closed/", "Connection refused")


@pytest.mark.parametrize(
    "plan, reason",
    [
        (FaultPlan(STATUS, status=500), "500"),
        (FaultPlan(STATUS, status=503), "503"),
        (FaultPlan(DROP), "demo-fault"),
        (FaultPlan(STALL, stall_seconds=30), "timed out"),
    ],
    ids=["500", "503", "drop", "stall"],
)
def test_persistent_index_fault_is_retried_a_bounded_number_of_times(index, invoke, write_recipe, tmp_path, net_env,
                                                                     plan, reason):  # fmt: skip
    index.add("demo-fault", "1.0")
    index.fault(plan)
    out = tmp_path / "dist"
    result = invoke("build", recipe_for(write_recipe, index.simple_url, "demo-fault"), "--out", out, env=net_env)
    reliability_figures.count("faults", plan.injected, detail=f"index {plan.kind}")
    line = assert_clean_failure(result, out, index.simple_url + "/demo-fault/", reason)
    assert "retr" in line  # says it retried
    # Retried, and boundedly: uv's attempts, plus the one early fetch of the project page that the
    # wheels backend makes while uv resolves (it never retries; the install would ask again).
    assert 2 <= plan.injected <= RETRIES + 2, index.requests


def test_transient_500_is_retried_through(index, invoke, write_recipe, tmp_path, net_env):
    index.add("demo-flaky", "1.0")
    plan = index.fault(FaultPlan(STATUS, status=500, count=1))
    out = tmp_path / "dist"
    result = invoke("build", recipe_for(write_recipe, index.simple_url, "demo-flaky"), "--out", out, env=net_env)
    reliability_figures.count("faults", plan.injected, detail="index transient 500")
    assert result.exit_code == 0, result.stderr
    assert plan.injected == 1
    assert (out / "netfault-python3.12-x86_64.zip").is_file()


def test_truncated_wheel_download_fails_naming_the_package(index, invoke, write_recipe, tmp_path, net_env):
    index.add("demo-trunc", "1.0")
    plan = index.fault(FaultPlan(TRUNCATE, match="/files/", methods=("GET",)))
    out = tmp_path / "dist"
    result = invoke("build", recipe_for(write_recipe, index.simple_url, "demo-trunc"), "--out", out, env=net_env)
    reliability_figures.count("faults", plan.injected, detail="index truncated wheel")
    assert_clean_failure(result, out, "demo-trunc")
    assert plan.injected <= 2 * (RETRIES + 1) + 2, index.requests  # resolve + install, each bounded


def test_tampered_mirror_fails_the_locked_build_naming_the_package(index, invoke, write_recipe, tmp_path, net_env):
    """Lock against the honest index; the mirror then serves other bytes (and a page hash that fits them)."""
    filename, _ = index.add("demo-locked", "1.0")
    recipe = recipe_for(write_recipe, index.simple_url, "demo-locked", name="locked")
    locked = invoke("lock", recipe, env=net_env)
    assert locked.exit_code == 0, locked.stderr
    lock_file = recipe.parent / "locked.lock" / "python3.12-x86_64.txt"
    assert "--hash=sha256:" in lock_file.read_text()

    _, evil = make_wheel("demo-locked", "1.0", files={"demo_locked/__init__.py": b"import os  # tampered\n"})
    index.served[filename] = evil
    reliability_figures.count("faults", detail="tampered wheel on the index")
    env = dict(net_env, UV_CACHE_DIR=net_env["UV_CACHE_DIR"] + "-2")  # nothing cached from the honest download
    out = tmp_path / "dist"
    result = invoke("build", recipe, "--out", out, env=env)
    line = assert_clean_failure(result, out, "hash mismatch for demo-locked", index.simple_url, "lock")
    assert "/tmp/" not in line  # no scratch paths the user cannot open


def test_uv_error_line_keeps_what_failed_and_why_but_not_warnings():
    from layerbuild.backends.wheels.uv import _first_error_line

    stderr = (
        "warning: A managed Python download is available\n"
        "  cause: failed to lookup address information\n"
        "error: Request failed after 3 retries in 11.3s\n"
        "  cause: Failed to fetch: http://127.0.0.1:9/simple/six/\n"
        "  cause: error sending request for url (http://127.0.0.1:9/simple/six/)\n"
        "  cause: tcp connect error\n"
        "  cause: Connection refused (os error 111)\n"
    )
    line = _first_error_line(stderr)
    assert line == ("Request failed after 3 retries in 11.3s: Failed to fetch: http://127.0.0.1:9/simple/six/: "
                    "Connection refused (os error 111)")  # fmt: skip


def test_an_unresolvable_host_is_named_in_a_few_words():
    """requests' own exception for a failed DNS lookup (built here: tests send nothing beyond 127.0.0.1)."""
    import socket

    import requests
    from urllib3.connection import HTTPSConnection
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    from layerbuild.klayers.client import _short
    from layerbuild.util.http import short_reason

    lookup = NameResolutionError("api.example.invalid", HTTPSConnection("api.example.invalid", 443),
                                 socket.gaierror(-3, "Temporary failure in name resolution"))  # fmt: skip
    error = requests.ConnectionError(MaxRetryError(None, "/api/v2/p3.12/layers/latest/us-east-1", lookup))
    assert short_reason(error) == _short(error) == "cannot resolve the host name"
    assert short_reason(ValueError("something else")) == "ValueError"
    assert _short(ValueError("something else")) == "something else"


# --- the AWS endpoint: a fault proxy in front of a real moto server --------------------------------

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import (  # noqa: E402
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
)
from faultproxy import THROTTLE, FaultProxy, free_port  # noqa: E402

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_proxy(moto_url, monkeypatch):
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    with FaultProxy(moto_url) as proxy:
        yield proxy


def lambda_client(url: str, attempts: int = 3):
    """attempts counts every try, first included (botocore's total_max_attempts)."""
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, connect_timeout=2, read_timeout=2)
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1", config=config)


def test_proxy_throttling_is_retried_through_by_the_aws_client(aws_proxy):
    plan = aws_proxy.fault(FaultPlan(THROTTLE, count=2))
    client = lambda_client(aws_proxy.url)
    assert "Layers" in client.list_layers()
    reliability_figures.count("faults", plan.injected, detail="AWS 429 TooManyRequestsException")
    assert plan.injected == 2 and len(plan.seen) == 3


def test_proxy_persistent_throttling_ends_after_bounded_attempts(aws_proxy):
    plan = aws_proxy.fault(FaultPlan(THROTTLE))
    client = lambda_client(aws_proxy.url, attempts=3)
    with pytest.raises(ClientError) as info:
        client.list_layers()
    reliability_figures.count("faults", plan.injected, detail="AWS 429 TooManyRequestsException")
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert plan.injected == 3


def test_proxy_dropped_and_stalled_connections(aws_proxy):
    drop = aws_proxy.fault(FaultPlan(DROP, count=1))
    assert "Layers" in lambda_client(aws_proxy.url).list_layers()  # retried past one dropped connection
    assert drop.injected == 1
    stall = aws_proxy.fault(FaultPlan(STALL, stall_seconds=10, match="/layers"))
    aws_proxy.plans.remove(drop)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, Exception)) as info:
        lambda_client(aws_proxy.url, attempts=2).list_layers()
    reliability_figures.count("faults", drop.injected + stall.injected, detail="AWS dropped/stalled connection")
    assert "timeout" in type(info.value).__name__.lower() or "timed out" in str(info.value).lower()
    assert stall.injected == 2


# --- the Klayers API: the fault proxy in front of a loopback Klayers server ---------------------

from klayers_server import serve_klayers  # noqa: E402

KLAYERS_PATH = "/api/v2/p3.12/layers/latest/us-east-1"


@pytest.fixture
def klayers_proxy(httpserver_ipv4, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # no answer carried over from other tests
    monkeypatch.delenv("LAYERBUILD_KLAYERS_TTL", raising=False)
    with FaultProxy(serve_klayers(httpserver_ipv4)) as proxy:
        yield proxy


def klayers_cache_files(tmp_path):
    return [p for p in (tmp_path / "xdg").rglob("*.json")] if (tmp_path / "xdg").exists() else []


def test_klayers_throttling_is_retried_through(klayers_proxy, invoke):
    plan = klayers_proxy.fault(FaultPlan(THROTTLE, count=2))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", klayers_proxy.url, "--format", "arns")
    reliability_figures.count("faults", plan.injected, detail="Klayers 429")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("arn:aws:lambda:us-east-1:") > 3
    assert plan.injected == 2 and len(plan.seen) == 3


def test_klayers_dropped_connections_end_in_one_line_after_bounded_attempts(klayers_proxy, invoke, tmp_path):
    plan = klayers_proxy.fault(FaultPlan(DROP))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", klayers_proxy.url)
    reliability_figures.count("faults", plan.injected, detail="Klayers dropped connection")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and klayers_proxy.url + KLAYERS_PATH in line and "attempts" in line, line
    assert 2 <= plan.injected <= 4
    assert klayers_cache_files(tmp_path) == []


def test_klayers_truncated_answer_is_one_line_and_not_cached(klayers_proxy, invoke, tmp_path):
    plan = klayers_proxy.fault(FaultPlan(TRUNCATE))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", klayers_proxy.url)
    reliability_figures.count("faults", plan.injected, detail="Klayers truncated answer")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and KLAYERS_PATH in line, line
    assert klayers_cache_files(tmp_path) == []  # a half answer is never cached
    again = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", klayers_proxy.url)  # plan is persistent
    assert again.exit_code == 1
    plan.count = plan.injected  # the fault clears
    healed = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", klayers_proxy.url)
    assert healed.exit_code == 0, healed.stderr


# --- publish through the fault proxy: bounded retries, no duplicate versions ------------------------

from faultproxy import DROP_AFTER  # noqa: E402

PUBLISH_MATCH = "/versions"  # POST /2018-10-31/layers/NAME/versions is PublishLayerVersion


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory):
    """A real layer zip + manifest (six), built once for the publish fault tests."""
    from layerbuild.build.pipeline import build_target
    from layerbuild.model.recipe import parse_recipe
    from layerbuild.model.runtimes import make_target

    out = tmp_path_factory.mktemp("publish-dist")
    recipe = parse_recipe({"name": "faultpub", "packages": ["six"]}, "faultpub.yaml")
    return build_target(recipe, make_target("3.12", "x86_64"), out_dir=out, use_cache=False).zip_path


@pytest.fixture
def publish(aws_proxy, invoke, monkeypatch):
    from layerbuild.cli.main import main

    assert "publish" in main.list_commands(None)  # commands load lazily (cli.LAZY_COMMANDS)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.url)

    def _publish(zip_path, *args):
        return invoke("publish", zip_path, "--region", "us-east-1", "--json", *args)

    return _publish


def layer_versions(moto_url: str, name: str) -> list[int]:
    client = lambda_client(moto_url)
    try:
        pages = client.get_paginator("list_layer_versions").paginate(LayerName=name)
        return sorted(v["Version"] for page in pages for v in page["LayerVersions"])
    except ClientError:
        return []


def published_name(result) -> str:
    [row] = json.loads(result.stdout) if result.stdout.strip().startswith("[") else [json.loads(result.stdout)]
    return row.get("layer_name") or row["results"][0]["layer_name"]


def test_publish_retries_throttling_and_a_rerun_adds_no_version(publish, aws_proxy, moto_url, built_layer):
    name = "faultpub-throttled"
    plan = aws_proxy.fault(FaultPlan(THROTTLE, count=2, match=PUBLISH_MATCH, methods=("POST",)))
    first = publish(built_layer, "--layer-name", name)
    reliability_figures.count("faults", plan.injected, detail="publish 429")
    assert first.exit_code == 0, first.output
    assert plan.injected == 2
    assert layer_versions(moto_url, name) == [1]
    again = publish(built_layer, "--layer-name", name)  # idempotent: same content, no new version
    assert again.exit_code == 0, again.output
    assert layer_versions(moto_url, name) == [1]


def test_publish_persistent_throttling_is_bounded_and_one_line(publish, aws_proxy, moto_url, built_layer):
    name = "faultpub-always-throttled"
    plan = aws_proxy.fault(FaultPlan(THROTTLE, match=PUBLISH_MATCH, methods=("POST",)))
    result = publish(built_layer, "--layer-name", name)
    reliability_figures.count("faults", plan.injected, detail="publish 429")
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "TooManyRequests" in last, result.stderr
    assert 2 <= plan.injected <= 6  # botocore standard mode: 5 retries at most
    assert layer_versions(moto_url, name) == []
    plan.count = plan.injected  # throttling over: a re-run completes
    rerun = publish(built_layer, "--layer-name", name)
    assert rerun.exit_code == 0, rerun.output
    assert layer_versions(moto_url, name) == [1]


def test_publish_answer_lost_after_the_server_acted_then_rerun(publish, aws_proxy, moto_url, built_layer):
    """The proxy forwards PublishLayerVersion, then hangs up: the version exists but the client never heard.

    botocore retries and AWS makes a second version with the same content; publish must undo it.
    """
    name = "faultpub-lost-answer"
    plan = aws_proxy.fault(FaultPlan(DROP_AFTER, count=1, match=PUBLISH_MATCH, methods=("POST",)))
    first = publish(built_layer, "--layer-name", name)
    reliability_figures.count("faults", plan.injected, detail="publish answer lost")
    assert "Traceback" not in first.output
    rerun = publish(built_layer, "--layer-name", name)
    assert rerun.exit_code == 0, rerun.output
    versions = layer_versions(moto_url, name)
    if len(versions) > 1:
        reliability_figures.count("artifacts_lost_or_corrupted", detail="duplicate layer version")
    assert versions == [1], versions  # without publish.drop_retry_duplicate: [1, 2], one content twice
    [row] = json.loads(first.stdout)
    assert first.exit_code == 0 and row["version"] == 1 and row["status"] == "published", first.stdout
