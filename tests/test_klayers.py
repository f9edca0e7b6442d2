"""klayers-lookup and the Klayers client, against a real HTTP server on 127.0.0.1 serving the API's format."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from klayers_server import base_url, fixture_json, requests_to, serve_klayers
from werkzeug import Response

from layerbuild.errors import KlayersError, TargetError
from layerbuild.klayers.client import KlayersClient, cache_dir
from layerbuild.klayers.model import klayers_target, parse_layers, select

P38_APN2 = "/api/v2/p3.8/layers/latest/ap-northeast-2"
P312_USE1 = "/api/v2/p3.12/layers/latest/us-east-1"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test starts with an empty Klayers cache (the shared XDG cache would carry answers over)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LAYERBUILD_KLAYERS_TTL", raising=False)


@pytest.fixture
def api(httpserver_ipv4, monkeypatch):
    url = serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", url)
    return httpserver_ipv4


class Clock:
    def __init__(self, start: float = 1_750_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def cached_files():
    folder = cache_dir()
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


# -- the "done when" command -------------------------------------------------------------------
def test_lookup_prints_a_table_from_the_configured_api(api, invoke):
    result = invoke("klayers-lookup", "ap-northeast-2", "p3.8")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PACKAGE", "VERSION", "ARN"]
    expected = {item["package"]: item for item in fixture_json("latest/p3.8/ap-northeast-2.json")}
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(expected)
    assert rows["requests"][1:] == ["2.31.0", "arn:aws:lambda:ap-northeast-2:770693421928:layer:Klayers-python38-requests:14"]
    # aligned: every row's ARN starts in the same column as the header's
    column = lines[0].index("ARN")
    assert all(line[column:].startswith("arn:aws:lambda:") for line in lines[1:])
    assert requests_to(api, P38_APN2) == 1


@pytest.mark.parametrize("spelling", ["p3.8", "3.8", "python3.8", "py38"])
def test_python_version_spellings(api, invoke, spelling):
    result = invoke("klayers-lookup", "ap-northeast-2", spelling, "requests", "--format", "arns")
    assert result.exit_code == 0, result.output
    assert result.stdout == "arn:aws:lambda:ap-northeast-2:770693421928:layer:Klayers-python38-requests:14\n"


def test_packages_match_by_pep503_name_and_missing_ones_fail(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "3.12", "pymysql", "PILLOW", "no-such-pkg", "--format", "arns")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-PyMySQL:5",
        "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-Pillow:4",
    ]
    assert "missing: no-such-pkg (Klayers has no p3.12 layer in us-east-1)" in result.stderr


def test_all_found_exits_zero_and_json_has_the_fields(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "python3.12", "PYMYSQL", "requests", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["missing"] == [] and data["python"] == "p3.12" and data["region"] == "us-east-1"
    assert [(layer["package"], layer["version"]) for layer in data["layers"]] == [("PyMySQL", "1.1.1"), ("requests", "2.32.3")]
    assert data["source"].endswith(P312_USE1) and data["from_cache"] is False


def test_arm64_selects_the_arm64_listing(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--arch", "arm64", "numpy", "--format", "arns")
    assert result.exit_code == 0, result.output
    assert result.stdout == "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-arm64-numpy:6\n"
    assert requests_to(api, "/api/v2/p3.12-arm64/layers/latest/us-east-1") == 1


def test_older_field_names_are_accepted(api, invoke):
    result = invoke("klayers-lookup", "eu-west-1", "p3.12", "pymysql", "--json")
    assert result.exit_code == 0, result.output
    (layer,) = json.loads(result.stdout)["layers"]
    assert layer["version"] == "1.1.1"
    assert layer["arn"] == "arn:aws:lambda:eu-west-1:770693421928:layer:Klayers-p312-PyMySQL:5"


def test_history_marks_deprecated_versions_with_expiry(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "p3.12", "--history", "requests")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "LAYER", "STATUS", "ARN"]
    assert lines[1].split()[:3] == ["2.32.3", "9", "latest"]
    assert "2.32.2" in lines[2] and "deprecated (expires 2025-12-24T08:15:02)" in lines[2]
    assert "2.31.0" in lines[3] and "deprecated (expires 2025-06-30T11:02:44)" in lines[3]


def test_history_json_derives_the_package_from_the_layer_name(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "p3.12", "--history", "requests", "--json")
    versions = json.loads(result.stdout)["versions"]
    assert {v["package"] for v in versions} == {"requests"}
    assert "urllib3==2.2.3" in versions[0]["dependencies"]


def test_empty_listing_says_so(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "3.13")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "Klayers lists no layers for p3.13 in us-east-1" in result.stderr
    result = invoke("klayers-lookup", "us-east-1", "3.13", "requests")
    assert result.exit_code == 1
    assert "missing: requests" in result.stderr


# -- bad input --------------------------------------------------------------------------------
def test_unknown_region_suggests_the_closest(api, invoke):
    result = invoke("klayers-lookup", "ap-northeast-9", "p3.8")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown AWS region 'ap-northeast-9' (did you mean 'ap-northeast-3'?)")
    assert len(api.log) == 0


@pytest.mark.parametrize(
    "pyver, arch, message",
    [
        ("3.7", "x86_64", "error: Klayers has no layers for Python '3.7' on x86_64; supported: p3.8, p3.9, p3.10, p3.11, p3.12, p3.13, p3.14"),
        ("p3.8", "arm64", "error: Klayers has no layers for Python 'p3.8' on arm64; supported: p3.10-arm64, p3.11-arm64, p3.12-arm64, p3.13-arm64, p3.14-arm64"),
        ("3.12", "sparc", "error: unknown architecture 'sparc': Lambda architectures are x86_64, arm64"),
    ],
)
def test_unsupported_versions_list_the_supported_ones(api, invoke, pyver, arch, message):
    result = invoke("klayers-lookup", "us-east-1", pyver, "--arch", arch)
    assert result.exit_code == 1
    assert result.stderr.strip() == message


def test_bad_api_url_and_ttl(api, invoke, monkeypatch):
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--api-url", "ftp://example")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --api-url: invalid Klayers API URL 'ftp://example': expected http:// or https://"
    monkeypatch.setenv("LAYERBUILD_KLAYERS_TTL", "soon")
    result = invoke("klayers-lookup", "us-east-1", "3.12")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: LAYERBUILD_KLAYERS_TTL: must be a number of seconds (0 or more), got 'soon'"


def test_history_with_packages_is_a_usage_error(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--history", "requests")
    assert result.exit_code == 2
    assert "give either PACKAGE arguments or --history PACKAGE, not both" in result.stderr


# -- HTTP failures ----------------------------------------------------------------------------
def test_404_is_one_line_naming_url_and_status(httpserver_ipv4, invoke, monkeypatch):
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data("Not Found", status=404)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    result = invoke("klayers-lookup", "us-east-1", "3.12")
    assert result.exit_code == 1
    url = base_url(httpserver_ipv4) + P312_USE1
    assert result.stderr == f"error: {url}: HTTP 404 NOT FOUND (unknown region, Python version or package?)\n"
    assert requests_to(httpserver_ipv4, P312_USE1) == 1  # not retried
    assert cached_files() == []


def test_500_then_success_is_retried(httpserver_ipv4):
    httpserver_ipv4.expect_oneshot_request(P312_USE1).respond_with_data("boom", status=500)
    httpserver_ipv4.expect_oneshot_request(P312_USE1).respond_with_data("bad gateway", status=502)
    serve_klayers(httpserver_ipv4)
    waits = []
    client = KlayersClient(base_url(httpserver_ipv4), backoff=0.25, sleep=waits.append)
    answer = client.latest(klayers_target("3.12"), "us-east-1")
    assert {layer.package for layer in answer.layers} >= {"requests", "PyMySQL"}
    assert requests_to(httpserver_ipv4, P312_USE1) == 3
    assert waits == [0.25, 0.5]  # exponential backoff between attempts


def test_429_honours_retry_after_within_the_cap(httpserver_ipv4):
    httpserver_ipv4.expect_oneshot_request(P312_USE1).respond_with_data("slow down", status=429, headers={"Retry-After": "2"})
    httpserver_ipv4.expect_oneshot_request(P312_USE1).respond_with_data("slow down", status=429, headers={"Retry-After": "3600"})
    serve_klayers(httpserver_ipv4)
    waits = []
    client = KlayersClient(base_url(httpserver_ipv4), retry_after_cap=5.0, sleep=waits.append)
    client.latest(klayers_target("3.12"), "us-east-1")
    assert waits == [2.0, 5.0]


def test_persistent_5xx_gives_up_after_bounded_attempts(httpserver_ipv4):
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data("down", status=503)
    waits = []
    client = KlayersClient(base_url(httpserver_ipv4), max_attempts=3, sleep=waits.append)
    with pytest.raises(KlayersError) as caught:
        client.latest(klayers_target("3.12"), "us-east-1")
    assert str(caught.value) == f"{base_url(httpserver_ipv4)}{P312_USE1}: HTTP 503 SERVICE UNAVAILABLE after 3 attempts"
    assert requests_to(httpserver_ipv4, P312_USE1) == 3
    assert len(waits) == 2


def test_a_failed_refresh_says_a_cached_answer_exists(httpserver_ipv4):
    url = serve_klayers(httpserver_ipv4)
    clock = Clock()
    KlayersClient(url, now=clock).latest(klayers_target("3.12"), "us-east-1")
    httpserver_ipv4.clear()
    httpserver_ipv4.expect_request(P312_USE1).respond_with_data("down", status=503)
    clock.now += 7 * 3600  # past the default TTL
    with pytest.raises(KlayersError) as caught:
        KlayersClient(url, now=clock, max_attempts=2, sleep=lambda s: None).latest(klayers_target("3.12"), "us-east-1")
    assert str(caught.value) == (f"{url}{P312_USE1}: HTTP 503 SERVICE UNAVAILABLE after 2 attempts; "
                                 "a cached answer from 7h 0m ago exists: use --offline to use it")  # fmt: skip


def test_slow_responses_time_out_within_bounded_attempts(httpserver_ipv4):
    def slow(request):
        time.sleep(0.6)
        return Response("[]", content_type="application/json")

    httpserver_ipv4.expect_request(P312_USE1).respond_with_handler(slow)
    client = KlayersClient(base_url(httpserver_ipv4), timeout=0.2, max_attempts=2, sleep=lambda s: None)
    with pytest.raises(KlayersError) as caught:
        client.latest(klayers_target("3.12"), "us-east-1")
    assert str(caught.value) == f"{base_url(httpserver_ipv4)}{P312_USE1}: no answer within 0.2s after 2 attempts"
    assert cached_files() == []
    # Both attempts reached the (single-threaded) server; wait, bounded, until it has served them so no
    # request of this test is left queued to be answered by the next test's handlers.
    deadline = time.monotonic() + 10
    while requests_to(httpserver_ipv4, P312_USE1) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_to(httpserver_ipv4, P312_USE1) == 2


def test_refused_connection_is_bounded_and_names_the_url():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits = []
    client = KlayersClient(f"http://127.0.0.1:{port}", max_attempts=2, sleep=waits.append)
    with pytest.raises(KlayersError) as caught:
        client.latest(klayers_target("3.12"), "us-east-1")
    assert str(caught.value) == f"http://127.0.0.1:{port}{P312_USE1}: cannot connect (Connection refused) after 2 attempts"
    assert len(waits) == 1


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"[{\"package\": \"requests\", ", "not valid JSON"),
        (b"{\"message\": \"Internal Server Error\"}", "item 0 has no arn/packageVersion"),
        (b"\"requests\"", "expected a JSON list of layers, got str"),
        (b"[{\"package\": \"requests\", \"packageVersion\": \"2.32.3\", \"arn\": 7}]", "item 0 has no arn/packageVersion"),
    ],
)
def test_malformed_responses_are_errors_and_never_cached(httpserver_ipv4, invoke, monkeypatch, body, problem):
    httpserver_ipv4.expect_oneshot_request(P312_USE1).respond_with_data(body, content_type="application/json")
    serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {base_url(httpserver_ipv4)}{P312_USE1}: malformed Klayers response: ")
    assert problem in result.stderr
    assert cached_files() == []
    # the next call fetches again and gets the good answer
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--format", "arns")
    assert result.exit_code == 0, result.output
    assert result.stdout == "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-requests:9\n"
    assert len(cached_files()) == 1


# -- cache and --offline -------------------------------------------------------------------------
def test_cache_answers_within_ttl_and_refetches_after(httpserver_ipv4):
    url = serve_klayers(httpserver_ipv4)
    clock = Clock()
    client = KlayersClient(url, ttl=3600, now=clock)
    target = klayers_target("3.12")
    first = client.latest(target, "us-east-1")
    assert not first.from_cache
    clock.now += 3599
    second = client.latest(target, "us-east-1")
    assert second.from_cache and second.age == 3599 and second.layers == first.layers
    assert requests_to(httpserver_ipv4, P312_USE1) == 1
    clock.now += 2  # past the TTL
    third = client.latest(target, "us-east-1")
    assert not third.from_cache
    assert requests_to(httpserver_ipv4, P312_USE1) == 2


def test_ttl_from_the_environment(httpserver_ipv4, monkeypatch):
    url = serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_TTL", "60")
    clock = Clock()
    client = KlayersClient(url, now=clock)
    client.latest(klayers_target("3.12"), "us-east-1")
    clock.now += 61
    client.latest(klayers_target("3.12"), "us-east-1")
    assert requests_to(httpserver_ipv4, P312_USE1) == 2


def test_offline_answers_from_the_cache_and_says_how_old(httpserver_ipv4):
    url = serve_klayers(httpserver_ipv4)
    clock = Clock()
    KlayersClient(url, now=clock).latest(klayers_target("3.12"), "us-east-1")
    clock.now += 3 * 3600 + 5 * 60  # older than the default TTL: offline still answers
    offline = KlayersClient(url, offline=True, ttl=60, now=clock)
    answer = offline.latest(klayers_target("3.12"), "us-east-1")
    assert answer.from_cache and answer.age == 3 * 3600 + 5 * 60
    assert answer.provenance() == f"from the cache, fetched 3h 5m ago from {url}{P312_USE1}"
    assert requests_to(httpserver_ipv4, P312_USE1) == 1


def test_offline_without_a_cached_answer_is_an_error(httpserver_ipv4, invoke, monkeypatch):
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--offline")
    assert result.exit_code == 1
    assert result.stderr == (f"error: --offline: no cached answer for {base_url(httpserver_ipv4)}{P312_USE1}; "
                             "run once without --offline to fetch it\n")  # fmt: skip
    assert len(httpserver_ipv4.log) == 0


def test_offline_cli_prints_the_age(api, invoke):
    assert invoke("klayers-lookup", "us-east-1", "3.12", "requests").exit_code == 0
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--offline", "--format", "arns")
    assert result.exit_code == 0, result.output
    assert result.stdout == "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-requests:9\n"
    assert "offline: answer from the cache, fetched 0s ago" in result.stderr
    assert requests_to(api, P312_USE1) == 1


def test_corrupt_cache_file_is_a_miss(httpserver_ipv4):
    url = serve_klayers(httpserver_ipv4)
    client = KlayersClient(url)
    client.latest(klayers_target("3.12"), "us-east-1")
    (entry,) = cache_dir().glob("*.json")
    entry.write_text("{half", encoding="utf-8")
    answer = client.latest(klayers_target("3.12"), "us-east-1")
    assert not answer.from_cache and answer.layers
    assert json.loads(entry.read_text(encoding="utf-8"))["url"] == url + P312_USE1
    assert [p.name for p in cache_dir().iterdir()] == [entry.name]  # no temp files left


# -- pure parsing ---------------------------------------------------------------------------------
def test_parse_accepts_both_field_generations_and_empty_answers():
    new = parse_layers([{"package": "PyMySQL", "packageVersion": "1.1.1",
                         "arn": "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-PyMySQL:5"}], "x")  # fmt: skip
    old = parse_layers([{"package": "PyMySQL", "package_version": "1.1.1",
                         "layer_version_arn": "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-PyMySQL:5"}], "x")  # fmt: skip
    assert new == old
    assert new[0].layer_version == 5 and new[0].layer_name == "Klayers-p312-PyMySQL"
    assert parse_layers([], "x") == [] and parse_layers({}, "x") == []
    assert select(new, ["pymysql"]).complete and not select(new, ["mysqlclient"]).complete


def test_klayers_target_segments():
    assert klayers_target("python3.12", "arm64").segment == "p3.12-arm64"
    assert klayers_target("p3.12-arm64").segment == "p3.12-arm64"
    assert klayers_target("3.8").segment == "p3.8"
    with pytest.raises(TargetError):
        klayers_target("3.9", "arm64")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["package", "packageVersion", "arn", "deployStatus", "expiryDate", "dependencies",
                         "layerVersion", "package_version", "layer_version_arn", "other"]), inner, max_size=6),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_parses_or_is_a_malformed_response_error(data):
    try:
        layers = parse_layers(data, "http://127.0.0.1/x")
    except KlayersError as exc:
        assert str(exc).startswith("http://127.0.0.1/x: malformed Klayers response: ")
    else:
        for layer in layers:
            assert layer.arn.startswith("arn:") and isinstance(layer.package, str) and isinstance(layer.version, str)
            select(layers, [layer.package])  # matching never crashes on what parsing accepted


def test_history_finds_klayers_own_spelling(api, invoke):
    api.expect_request("/api/v2/p3.12/layers/us-east-1/pillow").respond_with_json([])
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--history", "pillow", "--format", "arns")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-Pillow:4",
                                          "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-Pillow:3"]  # fmt: skip
    assert requests_to(api, "/api/v2/p3.12/layers/us-east-1/Pillow") == 1


def test_history_of_an_unknown_package_is_missing(api, invoke):
    api.expect_request("/api/v2/p3.12/layers/us-east-1/nothing-here").respond_with_json([])
    result = invoke("klayers-lookup", "us-east-1", "3.12", "--history", "nothing-here")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "missing: nothing-here (Klayers has no p3.12 layer in us-east-1)" in result.stderr


def test_sam_and_terraform_snippets(api, invoke):
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "pymysql", "--format", "sam")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("Layers:\n"
                             "  - arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-requests:9  # requests 2.32.3\n"
                             "  - arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-PyMySQL:5  # PyMySQL 1.1.1\n")  # fmt: skip
    result = invoke("klayers-lookup", "us-east-1", "3.12", "requests", "--format", "terraform")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("layers = [\n"
                             '  "arn:aws:lambda:us-east-1:770693421928:layer:Klayers-p312-requests:9",  # requests 2.32.3\n'
                             "]\n")  # fmt: skip
