"""Issue #16, what comes back over the network: redacted secrets, checked ARNs, capped and time-bounded reads.

Every server here is on 127.0.0.1; every wait is bounded (small deadlines through LAYERBUILD_NET_DEADLINE,
servers stopped at the end of each test).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import resource
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import reliability_figures
from faultproxy import (
    SLOW,
    STALL,
    STATUS,
    FaultPlan,
    FaultProxy,
    PackageIndex,
    closed_url,
    make_wheel,
)
from klayers_server import base_url, serve_klayers

from layerbuild.backends.wheels import store as wheelstore
from layerbuild.backends.wheels.index import (
    IndexFile,
    IndexUnavailable,
    project_listing,
)
from layerbuild.backends.wheels.uv import run_uv
from layerbuild.errors import KlayersError, ResolveError
from layerbuild.klayers.client import KlayersClient, cache_dir
from layerbuild.klayers.model import klayers_target, parse_layers
from layerbuild.model.arns import ascii_int, valid_layer_arn
from layerbuild.util.netsafe import Deadline, redact_text, redact_url

MARKER = "hunter2-MARKER-pw"
P312_USE1 = "/api/v2/p3.12/layers/latest/us-east-1"
GOOD_ARN = "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-requests:9"


@pytest.fixture(autouse=True)
def _private_klayers_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LAYERBUILD_KLAYERS_TTL", raising=False)
    monkeypatch.delenv("LAYERBUILD_NET_DEADLINE", raising=False)


def with_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://user:{MARKER}@{parts.netloc}{parts.path}"


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


class KlayersFaults(PackageIndex):
    """A Klayers API on 127.0.0.1 that answers `bodies` by path, with faultproxy's FaultPlans."""

    def __init__(self, bodies: dict[str, bytes]):
        super().__init__()
        self.bodies = bodies

    def respond(self, path: str):
        body = self.bodies.get(urlsplit(path).path)
        return (body, "application/json") if body is not None else (None, "text/plain")


# -- finding 8: secrets in URLs ------------------------------------------------------------------------------
def test_redact_url_hides_userinfo_and_token_like_parameters():
    """#16 finding 8: one function redacts userinfo and token-like query parameters."""
    assert redact_url("http://user:pass@host:8080/simple/") == "http://***@host:8080/simple/"
    assert redact_url("https://tok@host/x") == "https://***@host/x"
    signed = redact_url("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&X-Amz-Security-Token=t"
                        "&versionId=7")  # fmt: skip
    assert "AKIA" not in signed and "abc" not in signed and "=t" not in signed and "versionId=7" in signed
    for key in ("token", "key", "secret", "password", "sig", "access_token", "api-key", "client_secret"):
        assert MARKER not in redact_url(f"https://h/p?{key}={MARKER}&page=2"), key
    assert redact_url("https://pypi.org/simple/") == "https://pypi.org/simple/"
    assert redact_text(f'Could not connect to the endpoint URL: "http://u:{MARKER}@127.0.0.1:9/2018-10-31/layers"') \
        == 'Could not connect to the endpoint URL: "http://***@127.0.0.1:9/2018-10-31/layers"'
    reliability_figures.count("bad_inputs", 12, detail="URLs with secrets")


def test_klayers_url_password_is_in_no_output_no_json_and_no_cache_file(httpserver_ipv4, invoke, monkeypatch, tmp_path):
    """#16 finding 8: LAYERBUILD_KLAYERS_URL with credentials: not in --json (source), errors, notes or cache files."""
    url = serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", with_userinfo(url))
    outputs = []
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source"] == f"http://***@{urlsplit(url).netloc}{P312_USE1}"
    outputs.append(result.output)
    outputs.append(invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--offline").output)
    outputs.append(invoke("klayers-lookup", "eu-north-1", "3.12", "requests").output)  # 404: an error naming the URL
    outputs.append(invoke("klayers-lookup", "eu-north-1", "3.12", "requests", "--offline").output)
    outputs.append(invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", f"ftp://u:{MARKER}@x/").output)
    assert "error: " in outputs[2] and "error: " in outputs[3] and "error: " in outputs[4]
    for output in outputs:
        reliability_figures.scan_for_secrets(output, (MARKER,), "klayers-lookup output")
    cached = files_under(cache_dir())
    assert cached, "the answer was cached"
    for path, data in cached.items():
        reliability_figures.scan_for_secrets(data.decode("utf-8", "replace"), (MARKER,), str(path))
    reliability_figures.count("bad_inputs", 5, detail="Klayers URL with a password")


# -- finding 9 and 17: hostile ARNs and digits ----------------------------------------------------------------
TERRAFORM_INJECTION = 'arn:x",\n]\nresource "null_resource" "pwn" {\n  provisioner "local-exec" { command = "id" }\n}\n#'


@pytest.mark.parametrize("fmt", ["terraform", "sam", "arns", "table"])
def test_a_hostile_klayers_arn_never_reaches_snippets(httpserver_ipv4, invoke, monkeypatch, fmt):
    """#16 finding 9: an ARN that is not a layer-version ARN is dropped with one warning, never printed as is."""
    items = [{"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN},
             {"package": "boto3", "packageVersion": "1.35.68", "arn": TERRAFORM_INJECTION},
             {"package": "numpy", "packageVersion": "2.1.3",
              "arn": "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-numpy:8\nresource"},
             {"package": "evil\nresource", "packageVersion": "1", "arn": GOOD_ARN.replace("requests", "evil")},
             {"package": "pandas", "packageVersion": '1" }', "arn": GOOD_ARN.replace("requests", "pandas")}]  # fmt: skip
    httpserver_ipv4.expect_request(P312_USE1).respond_with_json(items)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "null_resource" not in result.stdout and "resource" not in result.stdout and "evil" not in result.stdout
    assert GOOD_ARN in result.stdout
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 4, result.stderr
    assert "dropped item 1 of the Klayers answer: arn 'arn:x\",\\n]\\nresource" in warnings[0]
    assert "is not a Lambda layer-version ARN" in warnings[0]
    assert all("\n" not in w for w in warnings)
    reliability_figures.count("bad_inputs", 4, detail="hostile Klayers items")


def test_resolve_and_build_plans_never_use_a_hostile_arn(httpserver_ipv4, invoke, monkeypatch, write_recipe):
    """#16 finding 9: the resolve plan (what --prefer-klayers attaches) holds only valid ARNs."""
    httpserver_ipv4.expect_request(P312_USE1).respond_with_json(
        [{"package": "requests", "packageVersion": "2.32.3", "arn": 'arn:aws:lambda:us-east-1:770693421928:layer:x:1"'}])
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    recipe = write_recipe(name="hostile", packages=["requests"], python=["3.12"], architectures=["x86_64"])
    result = invoke("resolve", recipe, "--region", "us-east-1", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["targets"][0]
    assert plan["arns"] == [] and plan["remaining"][0]["requirement"] == "requests"
    assert "warning: " in result.stderr
    reliability_figures.count("bad_inputs", detail="hostile Klayers items")


@pytest.mark.parametrize("item", [
    {"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN[:-1] + "\u00b2"},
    {"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN, "layer_version": "\u00b2"},
    {"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN, "layerVersion": "\u0663"},
    {"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN[:-1] + "\u0669"},
])  # fmt: skip
def test_unicode_digits_in_a_klayers_answer_are_one_warning_not_a_crash(httpserver_ipv4, invoke, monkeypatch, item):
    """#16 finding 17: an ARN ending in '²' or layer_version '²' (int() accepts them) is dropped with one line."""
    httpserver_ipv4.expect_request(P312_USE1).respond_with_json([item])
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    for args in (("requests",), ("--history", "requests")):
        httpserver_ipv4.expect_request("/api/v2/p3.12/layers/us-east-1/requests").respond_with_json([item])
        result = invoke("klayers-lookup", "us-east-1", "3.12", *args)
        assert result.exit_code == 1, result.output  # nothing usable: 'missing', not an internal error (70)
        assert "Traceback" not in result.output
        assert "warning: " in result.stderr and "dropped item 0" in result.stderr
    reliability_figures.count("bad_inputs", 2, detail="Unicode digits from Klayers")


def test_ascii_int_and_arn_pattern():
    """#16 finding 17: one strict helper for whole numbers from outside; the ARN pattern is ASCII only."""
    assert ascii_int("12") == 12 and ascii_int(7) == 7
    for bad in ("\u00b2", "\u0663", " 7", "7 ", "+7", "-1", -1, True, 1.0, "", None, "1" * 20):
        assert ascii_int(bad) is None, bad
    assert valid_layer_arn(GOOD_ARN)
    assert valid_layer_arn("arn:aws-cn:lambda:cn-north-1:123456789012:layer:my_layer-1:3")
    for bad in (GOOD_ARN + "\n", GOOD_ARN[:-1] + "\u00b2", GOOD_ARN.replace("770693421928", "77069342192"),
                GOOD_ARN.replace("layer:", "function:"), "arn:" + "x" * 300, TERRAFORM_INJECTION):  # fmt: skip
        assert not valid_layer_arn(bad), bad
    warnings: list[str] = []
    assert parse_layers([{"package": "r", "packageVersion": "1", "arn": GOOD_ARN[:-1] + "\u00b2"}], "w", warnings) == []
    assert len(warnings) == 1 and warnings[0].startswith("w: dropped item 0")


# -- finding 15 (Klayers part): deep JSON -----------------------------------------------------------------------
def test_deeply_nested_klayers_answer_is_one_line(httpserver_ipv4, invoke, monkeypatch):
    """#16 finding 15: a deeply nested JSON answer (RecursionError) is one KlayersError line naming the URL."""
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data("[" * 200_000 + "]" * 200_000,
                                                                content_type="application/json")  # fmt: skip
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    line = one_error_line(invoke("klayers-lookup", "us-east-1", "3.12", "requests"))
    assert line.startswith(f"error: {base_url(httpserver_ipv4)}{P312_USE1}: malformed Klayers response: JSON nested")
    assert not files_under(cache_dir())
    reliability_figures.count("bad_inputs", detail="deeply nested Klayers JSON")


def test_deeply_nested_klayers_cache_file_is_discarded(httpserver_ipv4, invoke, monkeypatch):
    """#16 finding 15: a damaged (deeply nested) cache file is discarded and fetched again, not exit 70."""
    url = serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", url)
    assert invoke("klayers-lookup", "us-east-1", "3.12", "requests").exit_code == 0
    (entry,) = cache_dir().glob("*.json")
    entry.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    offline = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--offline")
    assert one_error_line(offline).startswith("error: --offline: no cached answer for ")
    assert not entry.exists()  # discarded
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--format", "arns")
    assert result.exit_code == 0 and result.stdout == GOOD_ARN + "\n"
    assert json.loads(entry.read_text(encoding="utf-8"))["body"]
    reliability_figures.count("bad_inputs", detail="deeply nested Klayers cache file")


# -- finding 11: capped reads ----------------------------------------------------------------------------------
def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip body of about inflated_mb/1000 MB that inflates to inflated_mb MB (concatenated gzip members)."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (inflated_mb // 16)


def test_gzip_bomb_klayers_answer_fails_fast_with_bounded_memory(httpserver_ipv4, invoke, monkeypatch):
    """#16 finding 11: a ~1 MB gzip answer inflating to 1 GB is refused at the cap, naming the host."""
    bomb = gzip_bomb(1024)
    assert len(bomb) < 2 << 20
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data(
        bomb, content_type="application/json", headers={"Content-Encoding": "gzip"})
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    line = one_error_line(invoke("klayers-lookup", "us-east-1", "3.12", "requests"))
    assert time.monotonic() - started < 30  # guards a hang, not a timing
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert line == (f"error: {base_url(httpserver_ipv4)}{P312_USE1}: Klayers answer larger than the 16 MB cap "
                    "(after decompression); refused")  # fmt: skip
    assert grown_mb < 400, grown_mb  # the answer alone would be 1,024 MB
    assert not files_under(cache_dir())
    reliability_figures.count("faults", detail="gzip bomb Klayers answer")


def test_plain_oversized_klayers_answer_is_refused_before_reading(httpserver_ipv4):
    """#16 finding 11: a declared Content-Length over the cap is refused without reading the body."""
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data(b" " * ((16 << 20) + 1), content_type="application/json")
    with pytest.raises(KlayersError, match="Klayers answer larger than the 16 MB cap"):
        KlayersClient(base_url(httpserver_ipv4)).latest(klayers_target("3.12"), "us-east-1")
    reliability_figures.count("faults", detail="oversized Klayers answer")


# -- finding 13: total deadlines -------------------------------------------------------------------------------
def test_slow_klayers_server_is_cut_off_at_the_total_deadline(invoke, monkeypatch):
    """#16 finding 13: a server dripping its answer (a piece every second, each read in time) stops at the deadline."""
    body = json.dumps([{"package": "requests", "packageVersion": "2.32.3", "arn": GOOD_ARN}]).encode()
    with KlayersFaults({P312_USE1: body}) as server:
        plan = server.fault(FaultPlan(SLOW, stall_seconds=20.0))  # 20 pieces, one a second: 20 s in all
        monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", server.url)
        monkeypatch.setenv("LAYERBUILD_NET_DEADLINE", "1.5")
        started = time.monotonic()
        line = one_error_line(invoke("klayers-lookup", "us-east-1", "3.12", "requests"))
        elapsed = time.monotonic() - started
    assert line == (f"error: {server.url}{P312_USE1}: no complete Klayers answer within the 1.5s deadline "
                    "(set LAYERBUILD_NET_DEADLINE to allow more)")  # fmt: skip
    assert elapsed < 10, elapsed  # the drip alone takes 20 s
    assert plan.injected == 1  # not retried: a slow server is not faster the second time
    reliability_figures.count("faults", plan.injected, detail="slow Klayers server")


def test_stalled_klayers_server_is_bounded_by_the_deadline_across_retries(invoke, monkeypatch):
    """#16 finding 13: a server that accepts and never answers: every attempt and wait within one deadline."""
    with KlayersFaults({}) as server:
        plan = server.fault(FaultPlan(STALL, stall_seconds=30.0))
        monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", server.url)
        monkeypatch.setenv("LAYERBUILD_NET_DEADLINE", "1")
        started = time.monotonic()
        line = one_error_line(invoke("klayers-lookup", "us-east-1", "3.12", "requests"))
        elapsed = time.monotonic() - started
    assert line.startswith(f"error: {server.url}{P312_USE1}: ")
    assert "1s deadline" in line
    assert elapsed < 10, elapsed  # 4 attempts x 10 s before
    reliability_figures.count("faults", plan.injected, detail="stalled Klayers server")


def test_deadline_object():
    """#16 finding 13: per-read timeouts never outlast the total deadline."""
    clock = [100.0]
    deadline = Deadline(5, clock=lambda: clock[0])
    assert deadline.timeout(10) == 5 and not deadline.expired
    clock[0] += 4
    assert deadline.timeout(10) == 1
    clock[0] += 2
    assert deadline.expired and deadline.timeout(10) == 0.05


# -- the package index, wheel downloads and uv -----------------------------------------------------------------
NET_ENV = {"UV_HTTP_TIMEOUT": "2", "UV_HTTP_RETRIES": "1"}


@pytest.fixture
def index():
    with PackageIndex() as server:
        yield server


@pytest.fixture
def net_env(tmp_path):
    return dict(NET_ENV, UV_CACHE_DIR=str(tmp_path / "uv-cache"))


def index_recipe(write_recipe, index_url: str, package: str, name: str = "trustnet"):
    return write_recipe(f"name: {name}\npackages: [{package}]\nindex_url: {index_url}\n", filename=f"{name}.yaml")


def test_index_password_is_in_no_hash_mismatch_or_download_error(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 8: index_url with user:pass@: the hash-mismatch and download errors show ***@, never the password."""
    filename, _ = index.add("demo-secret", "1.0")
    secret_url = with_userinfo(index.simple_url)
    recipe = index_recipe(write_recipe, secret_url, "demo-secret", name="secret")
    locked = invoke("lock", recipe, env=net_env)
    assert locked.exit_code == 0, locked.stderr
    _, evil = make_wheel("demo-secret", "1.0", files={"demo_secret/__init__.py": b"import os  # tampered\n"})
    index.served[filename] = evil
    out = tmp_path / "dist"
    mismatch = invoke("build", recipe, "--out", out, env=dict(net_env, UV_CACHE_DIR=net_env["UV_CACHE_DIR"] + "-2"))
    line = one_error_line(mismatch)
    assert "hash mismatch for demo-secret" in line and f"http://***@{urlsplit(index.url).netloc}/simple" in line
    index.served.clear()
    plan = index.fault(FaultPlan(STATUS, status=403, match="/files/"))
    failed = invoke("build", recipe, "--out", out, "--no-cache", env=dict(net_env, UV_CACHE_DIR=net_env["UV_CACHE_DIR"] + "-3"))
    assert "http://***@" in one_error_line(failed)
    page = index.fault(FaultPlan(STATUS, status=500, match="/simple/"))
    unlocked = index_recipe(write_recipe, secret_url, "demo-other", name="other")
    resolving = invoke("build", unlocked, "--out", out, env=net_env)  # uv's own error, echoed
    one_error_line(resolving)
    for result in (locked, mismatch, failed, resolving):
        reliability_figures.scan_for_secrets(result.output, (MARKER,), "build output")
    for path, data in files_under(tmp_path / "xdg").items():
        reliability_figures.scan_for_secrets(data.decode("utf-8", "replace"), (MARKER,), str(path))
    reliability_figures.count("faults", 1 + plan.injected + page.injected, detail="index with a password in its URL")


def bomb_server(httpserver, path: str, inflated_mb: int = 1024, content_type: str = "text/html"):
    httpserver.expect_request(path).respond_with_data(gzip_bomb(inflated_mb), content_type=content_type,
                                                      headers={"Content-Encoding": "gzip"})  # fmt: skip
    return base_url(httpserver)


def test_gzip_bomb_index_page_is_refused_at_the_cap(httpserver_ipv4):
    """#16 finding 11: a 1 MB gzip project page inflating to 1 GB stops at the 64 MB cap, naming the host."""
    url = bomb_server(httpserver_ipv4, "/simple/bomb/")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(IndexUnavailable) as caught:
        project_listing("bomb", url + "/simple")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert str(caught.value) == (f"{url}/simple/bomb/: project page larger than the 64 MB cap (after decompression); "
                                 "refused")  # fmt: skip
    assert grown_mb < 600, grown_mb
    reliability_figures.count("faults", detail="gzip bomb index page")


def test_gzip_bomb_wheel_download_is_refused_at_the_cap(httpserver_ipv4, tmp_path, monkeypatch):
    """#16 finding 11: a wheel download is capped (250 MB, lowered here to keep the test fast); nothing is stored."""
    assert wheelstore.MAX_WHEEL_BYTES == 250 << 20  # Lambda's unzipped limit: no bigger wheel fits a layer
    monkeypatch.setattr(wheelstore, "MAX_WHEEL_BYTES", 32 << 20)
    url = bomb_server(httpserver_ipv4, "/files/bomb-1.0-py3-none-any.whl", 256, "application/octet-stream")
    file_url = url + "/files/bomb-1.0-py3-none-any.whl"
    download = wheelstore.Download("bomb", IndexFile("bomb-1.0-py3-none-any.whl", file_url), frozenset({"0" * 64}),
                                   url + "/simple")  # fmt: skip
    with pytest.raises(ResolveError) as caught:
        wheelstore.fetch(download, tmp_path / "store")
    assert str(caught.value) == (f"cannot download bomb-1.0-py3-none-any.whl for bomb from {file_url}: "
                                 "wheel larger than the 32 MB cap (after decompression); refused")  # fmt: skip
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
    reliability_figures.count("faults", detail="gzip bomb wheel")


def test_slow_index_page_and_wheel_are_cut_off_at_the_deadline(index, monkeypatch, tmp_path):
    """#16 finding 13: an index page or a wheel dripping in (each read in time) stops at the total deadline."""
    filename, data = index.add("demo-slow", "1.0")
    monkeypatch.setenv("LAYERBUILD_NET_DEADLINE", "1.5")
    page = index.fault(FaultPlan(SLOW, stall_seconds=20.0, match="/simple/"))
    started = time.monotonic()
    with pytest.raises(IndexUnavailable) as caught:
        project_listing("demo-slow", index.simple_url)
    assert str(caught.value) == (f"{index.simple_url}/demo-slow/: no complete project page within the 1.5s deadline "
                                 "(set LAYERBUILD_NET_DEADLINE to allow more)")  # fmt: skip
    index.plans.remove(page)
    wheel = index.fault(FaultPlan(SLOW, stall_seconds=20.0, match="/files/"))
    download = wheelstore.Download("demo-slow", IndexFile(filename, f"{index.url}/files/{filename}"),
                                   frozenset({hashlib.sha256(data).hexdigest()}), index.simple_url)  # fmt: skip
    with pytest.raises(ResolveError) as caught:
        wheelstore.fetch(download, tmp_path / "store")
    assert str(caught.value) == (f"cannot download {filename} for demo-slow from {index.url}/files/{filename}: "
                                 "no complete wheel within the 1.5s deadline (set LAYERBUILD_NET_DEADLINE to allow more)")  # fmt: skip
    assert time.monotonic() - started < 20, "each drip alone takes 20 s"
    assert page.injected == 1 and wheel.injected == 1  # not retried
    reliability_figures.count("faults", 2, detail="slow index page and wheel")


def test_build_against_a_dripping_index_ends_at_the_deadline(index, invoke, write_recipe, tmp_path, net_env):
    """#16 finding 13: `build` (uv's run and our own downloads) is bounded by the total deadline, one line."""
    index.add("demo-drip", "1.0")
    plan = index.fault(FaultPlan(SLOW, stall_seconds=60.0))  # every page and file: 60 s each
    out = tmp_path / "dist"
    started = time.monotonic()
    result = invoke("build", index_recipe(write_recipe, index.simple_url, "demo-drip"), "--out", out,
                    env=dict(net_env, LAYERBUILD_NET_DEADLINE="2"))  # fmt: skip
    elapsed = time.monotonic() - started
    line = one_error_line(result)
    assert "2s deadline" in line and "127.0.0.1" in line, line
    assert elapsed < 30, elapsed
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]
    reliability_figures.count("faults", plan.injected, detail="dripping index during build")


def test_uv_is_killed_at_its_deadline(monkeypatch, tmp_path):
    """#16 finding 13: the uv subprocess itself has a total deadline (a stalled index cannot hold it)."""
    with KlayersFaults({}) as server:
        plan = server.fault(FaultPlan(STALL, stall_seconds=30.0))
        monkeypatch.setenv("LAYERBUILD_NET_DEADLINE", "1")
        monkeypatch.setenv("UV_HTTP_TIMEOUT", "60")
        (tmp_path / "req.in").write_text("demo-stall\n")
        started = time.monotonic()
        with pytest.raises(ResolveError) as caught:
            run_uv(["pip", "compile", "--no-config", "--index-url", f"{server.url}/simple", str(tmp_path / "req.in"),
                    "--cache-dir", str(tmp_path / "uvc")], cwd=tmp_path)  # fmt: skip
        elapsed = time.monotonic() - started
    assert str(caught.value) == (f"uv pip compile: no result from {urlsplit(server.url).netloc} within the 1s deadline "
                                 "(set LAYERBUILD_NET_DEADLINE to allow more)")  # fmt: skip
    assert elapsed < 10, elapsed
    reliability_figures.count("faults", max(1, plan.injected), detail="stalled index under uv")


# -- publish: a stalled endpoint, a password in AWS_ENDPOINT_URL -------------------------------------------------
@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    """One small layer built from a loopback index (zip + manifest), for the publish tests."""
    from click.testing import CliRunner

    from layerbuild.cli.main import main

    folder = tmp_path_factory.mktemp("pubzip")
    with PackageIndex() as server:
        server.add("demo-pub", "1.0")
        recipe = folder / "pub.yaml"
        recipe.write_text(f"name: pub\npackages: [demo-pub]\nindex_url: {server.simple_url}\npython: ['3.12']\n"
                          "architectures: [x86_64]\n")  # fmt: skip
        result = CliRunner().invoke(main, ["build", str(recipe), "--out", str(folder / "dist")],
                                    env=dict(NET_ENV, UV_CACHE_DIR=str(folder / "uvc")), catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    (zip_path,) = (folder / "dist").glob("*.zip")
    return zip_path


FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_publish_to_an_endpoint_that_never_answers_ends_at_the_deadline(built_zip, invoke):
    """#16 finding 13 and 8: publish against an endpoint that accepts and never answers: one line naming the host
    within the deadline (botocore's per-read timeouts and retries alone took 12 minutes); no password shown."""
    with FaultProxy(closed_url()) as proxy:
        plan = proxy.fault(FaultPlan(STALL, stall_seconds=30.0))
        host = urlsplit(proxy.url).netloc
        env = dict(FAKE_AWS, AWS_ENDPOINT_URL=f"http://u:{MARKER}@{host}", LAYERBUILD_NET_DEADLINE="1")
        started = time.monotonic()
        result = invoke("publish", built_zip, "--region", "us-east-1", env=env)
        elapsed = time.monotonic() - started
    line = one_error_line(result)
    assert f"us-east-1 (pub-py312-x86_64): {host}: no complete AWS answer within the 1s deadline" in line, line
    reliability_figures.scan_for_secrets(result.output, (MARKER,), "publish output")
    assert elapsed < 15, elapsed
    reliability_figures.count("faults", plan.injected, detail="AWS endpoint that never answers")


def test_publish_error_never_shows_the_endpoint_password(built_zip, invoke):
    """#16 finding 8: AWS_ENDPOINT_URL=http://u:p@127.0.0.1:PORT (nothing listening): the error shows ***@."""
    env = dict(FAKE_AWS, AWS_ENDPOINT_URL=with_userinfo(closed_url()), LAYERBUILD_NET_DEADLINE="5")
    result = invoke("publish", built_zip, "--region", "us-east-1", "--json", env=env)
    assert result.exit_code == 1
    reliability_figures.scan_for_secrets(result.output, (MARKER,), "publish output")
    assert "***@127.0.0.1" in result.output, result.output
    reliability_figures.count("bad_inputs", detail="AWS endpoint with a password")


class HeaderDrip:
    """A server on 127.0.0.1 that answers every connection with a status line, then one header line every
    half second (60 of them, 30 s): each read comes in time, the headers never end. Stopped on exit."""

    def __init__(self):
        import socket
        import threading

        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            try:
                conn.settimeout(1)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for number in range(60):
                    if self.stop.wait(0.5):
                        return
                    conn.sendall(b"X-Drip-%d: x\r\n" % number)
            except OSError:
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_dripping_headers_are_cut_off_at_the_deadline(invoke, monkeypatch, tmp_path):
    """#16 finding 13: a server that drips its status line and headers (never a read timeout) is cut off at the
    total deadline too: klayers-lookup, an index page and a wheel download."""
    with HeaderDrip() as server:
        monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", server.url)
        monkeypatch.setenv("LAYERBUILD_NET_DEADLINE", "1.5")
        started = time.monotonic()
        line = one_error_line(invoke("klayers-lookup", "us-east-1", "3.12", "requests"))
        assert line == (f"error: {server.url}{P312_USE1}: no complete Klayers answer within the 1.5s deadline "
                        "(set LAYERBUILD_NET_DEADLINE to allow more)")  # fmt: skip
        with pytest.raises(IndexUnavailable, match=r"/simple/demo/: no complete project page within the 1.5s deadline"):
            project_listing("demo", server.url + "/simple")
        download = wheelstore.Download("demo", IndexFile("demo-1.0-py3-none-any.whl", server.url + "/files/demo.whl"),
                                       frozenset({"0" * 64}), server.url + "/simple")  # fmt: skip
        with pytest.raises(ResolveError, match=r"no complete wheel within the 1.5s deadline"):
            wheelstore.fetch(download, tmp_path / "store")
        elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # each drip alone lasts 30 s
    reliability_figures.count("faults", server.connections, detail="dripping headers")
