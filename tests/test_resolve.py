"""resolve and build --prefer-klayers: shipped and tmp recipes against Klayers fixtures on 127.0.0.1, real builds."""

from __future__ import annotations

import json
import zipfile

import pytest
from klayers_server import base_url, requests_to, serve_klayers
from packaging.requirements import Requirement

from layerbuild.klayers.model import KlayersLayer
from layerbuild.klayers.plan import plan_target, shadowed
from layerbuild.model.lockfile import Lock, requirements_digest
from layerbuild.model.recipe import load_recipe
from layerbuild.model.runtimes import make_target

ACCOUNT = "770693421928"


def arn(region: str, name: str, version: int) -> str:
    return f"arn:aws:lambda:{region}:{ACCOUNT}:layer:{name}:{version}"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LAYERBUILD_KLAYERS_TTL", raising=False)


@pytest.fixture
def api(httpserver_ipv4, monkeypatch):
    url = serve_klayers(httpserver_ipv4)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", url)
    return httpserver_ipv4


def resolve_json(invoke, *args):
    result = invoke("resolve", *args, "--json")
    assert result.exit_code == 0, result.output
    return {t["target"]: t for t in json.loads(result.stdout)["targets"]}


def zip_names(path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


# -- resolve on shipped recipes ---------------------------------------------------------------------
def test_shipped_requests_recipe_is_covered_on_both_architectures(api, invoke):
    targets = resolve_json(invoke, "requests", "--region", "us-east-1")
    assert set(targets) == {"python3.12-x86_64", "python3.12-arm64"}
    assert targets["python3.12-x86_64"]["arns"] == [arn("us-east-1", "Klayers-p312-requests", 9)]
    assert targets["python3.12-arm64"]["arns"] == [arn("us-east-1", "Klayers-p312-arm64-requests", 7)]
    assert all(t["remaining"] == [] and t["layers"] == 1 for t in targets.values())


def test_shipped_pymysql_recipe_matches_the_pep503_name(api, invoke):
    targets = resolve_json(invoke, "pymysql", "--region", "eu-west-1")  # the older field names
    (plan,) = targets.values()
    assert plan["covered"] == [{"requirement": "pymysql", "package": "PyMySQL", "version": "1.1.1",
                                "arn": arn("eu-west-1", "Klayers-p312-PyMySQL", 5)}]  # fmt: skip


def test_resolve_table_shows_what_is_covered_and_what_remains(api, invoke, write_recipe):
    path = write_recipe(name="mixed", packages=["requests>=2.31", "six==1.16.0", "pymysql<1.0"], python=["3.12"])
    result = invoke("resolve", path, "--region", "us-east-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "REQUIREMENT", "SOURCE", "DETAIL"]
    rows = {line.split()[1]: line for line in lines[1:4]}
    assert "klayers" in rows["requests>=2.31"] and arn("us-east-1", "Klayers-p312-requests", 9) in rows["requests>=2.31"]
    assert rows["six==1.16.0"].split()[2:] == ["build", "Klayers", "has", "no", "layer", "for", "it"]
    assert "Klayers has 1.1.1, the recipe wants <1.0" in rows["pymysql<1.0"]
    assert "python3.12-x86_64 in us-east-1: 1 Klayers layer(s) + own layer = 2 of 5" in result.stdout


def test_lock_pins_must_match_the_klayers_version(api, invoke, write_recipe):
    path = write_recipe(name="pinned", packages=["requests", "PyMySQL"], python=["3.12"])
    recipe = load_recipe(str(path))
    target = make_target("3.12", "x86_64")
    lock = Lock(target.slug, requirements_digest(recipe), "requests==2.31.0 \\\n    --hash=sha256:00\npymysql==1.1.1\n")
    recipe.lock_path(target).parent.mkdir(parents=True)
    recipe.lock_path(target).write_text(lock.render(target), encoding="utf-8")
    plan = resolve_json(invoke, path, "--region", "us-east-1")["python3.12-x86_64"]
    assert plan["remaining"] == [{"requirement": "requests==2.31.0", "reason": "Klayers has 2.32.3, the lock pins 2.31.0"}]
    assert [c["requirement"] for c in plan["covered"]] == ["PyMySQL==1.1.1"]


def test_stale_lock_is_noted_and_not_applied(api, invoke, write_recipe):
    path = write_recipe(name="stale", packages=["requests"], python=["3.12"])
    recipe = load_recipe(str(path))
    target = make_target("3.12", "x86_64")
    recipe.lock_path(target).parent.mkdir(parents=True)
    recipe.lock_path(target).write_text(Lock(target.slug, "0" * 64, "requests==2.31.0\n").render(target), encoding="utf-8")
    plan = resolve_json(invoke, path, "--region", "us-east-1")["python3.12-x86_64"]
    assert [c["requirement"] for c in plan["covered"]] == ["requests"]
    assert plan["notes"] == [f"{recipe.lock_path(target)}: lock is stale (run 'layerbuild lock stale'); its pins were not applied"]


def test_targets_klayers_does_not_publish_build_everything_without_asking(api, invoke, write_recipe):
    path = write_recipe(name="old", packages=["requests[socks]"], python=["3.9"], architectures=["arm64"])
    plan = resolve_json(invoke, path, "--region", "us-east-1")["python3.9-arm64"]
    assert plan["remaining"] == [{"requirement": "requests[socks]", "reason": "Klayers publishes no layers for python3.9-arm64"}]
    assert len(api.log) == 0


def test_extras_are_not_covered(api, invoke, write_recipe):
    path = write_recipe(name="extras", packages=["requests[socks]>=2"], python=["3.12"])
    plan = resolve_json(invoke, path, "--region", "us-east-1")["python3.12-x86_64"]
    assert plan["remaining"] == [{"requirement": "requests[socks]>=2", "reason": "extras [socks] are not in the Klayers layer"}]


def test_resolve_errors_are_one_line(httpserver_ipv4, invoke, monkeypatch, write_recipe):
    result = invoke("resolve", "requests", "--region", "us-eats-1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown AWS region 'us-eats-1' (did you mean 'us-east-1'?)")
    httpserver_ipv4.expect_request("/api/v2/p3.12/layers/latest/us-east-1").respond_with_data("no", status=403)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    result = invoke("resolve", "pymysql", "--region", "us-east-1")
    assert result.exit_code == 1
    assert result.stderr == f"error: {base_url(httpserver_ipv4)}/api/v2/p3.12/layers/latest/us-east-1: HTTP 403 FORBIDDEN\n"


def test_a_404_listing_means_build_everything(httpserver_ipv4, invoke, monkeypatch):
    httpserver_ipv4.expect_request("/api/v2/p3.12/layers/latest/me-south-1").respond_with_data("Not Found", status=404)
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", base_url(httpserver_ipv4))
    plan = resolve_json(invoke, "pymysql", "--region", "me-south-1")["python3.12-x86_64"]
    assert plan["remaining"] == [{"requirement": "pymysql", "reason": "Klayers publishes no layers for python3.12-x86_64"}]
    assert plan["notes"][0].startswith("Klayers has no p3.12 listing in me-south-1 (")
    assert "HTTP 404 NOT FOUND" in plan["notes"][0]


# -- the 5-layer limit and shadowing (pure) ---------------------------------------------------------
def _layers(region, names):
    return [KlayersLayer(n, "1.0", arn(region, f"Klayers-p312-{n}", 1)) for n in names]


def test_over_the_layer_limit_builds_more_itself():
    names = ["a", "b", "c", "d", "e", "f"]
    plan = plan_target([Requirement(n) for n in names], make_target("3.12", "x86_64"), _layers("us-east-1", names))
    assert [c.layer.package for c in plan.covered] == ["a", "b", "c", "d"]
    assert plan.remaining_packages == ("e", "f")
    assert plan.layer_count == 5
    assert "building e, f into the own layer instead" in plan.notes[0]


def test_exactly_five_covered_needs_no_own_layer():
    names = ["a", "b", "c", "d", "e"]
    plan = plan_target([Requirement(n) for n in names], make_target("3.12", "x86_64"), _layers("us-east-1", names))
    assert plan.layer_count == 5 and not plan.remaining and not plan.notes


def test_shadowing_uses_names_and_bundled_dependencies():
    layer = KlayersLayer("requests", "2.32.3", arn("us-east-1", "Klayers-p312-requests", 9),
                         dependencies=("certifi==2024.8.30", "idna==3.10", "urllib3==2.2.3"))  # fmt: skip
    plan = plan_target([Requirement("requests"), Requirement("six")], make_target("3.12", "x86_64"), [layer])
    assert shadowed(plan, ["six", "IDNA", "Requests"]) == ["idna", "requests"]
    assert shadowed(plan, ["six"]) == []


# -- build --prefer-klayers (real builds of the remainder) -----------------------------------------------
def test_prefer_klayers_everything_covered_builds_nothing(api, invoke, tmp_path):
    out = tmp_path / "dist"
    result = invoke("build", "requests", "--prefer-klayers", "--region", "us-east-1", "--arch", "x86_64", "--out", out)
    assert result.exit_code == 0, result.output
    assert "requests python3.12-x86_64: every requirement is covered by Klayers in us-east-1; nothing built" in result.stdout
    assert arn("us-east-1", "Klayers-p312-requests", 9) in result.stdout
    assert not out.exists() or not list(out.iterdir())


def test_prefer_klayers_builds_only_the_remainder(api, invoke, write_recipe, tmp_path):
    path = write_recipe(name="mixed", packages=["requests>=2.31", "six==1.16.0", "pymysql<1.0"], python=["3.12"],
                        imports=["requests", "six", "pymysql"])  # fmt: skip
    out = tmp_path / "dist"
    result = invoke("build", path, "--prefer-klayers", "--region", "us-east-1", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert entry["build"]["packages"] == {"PyMySQL": "0.10.1", "six": "1.16.0"}
    assert entry["stack"] == [arn("us-east-1", "Klayers-p312-requests", 9), str(out / "mixed-python3.12-x86_64.zip")]
    names = zip_names(out / "mixed-python3.12-x86_64.zip")
    assert "python/six.py" in names and "python/pymysql/__init__.py" in names
    assert not any(n.startswith("python/requests/") for n in names)


def test_prefer_klayers_stays_within_five_layers(api, invoke, write_recipe, tmp_path):
    path = write_recipe(name="many", packages=["requests", "pymysql", "boto3", "pytz", "six", "idna"], python=["3.12"])
    out = tmp_path / "dist"
    result = invoke("build", path, "--prefer-klayers", "--region", "ap-southeast-2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "attach in this order (5 of 5 layers):" in result.stdout
    arns = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("arn:")]
    assert arns == [arn("ap-southeast-2", f"Klayers-p312-{n}", v) for n, v in (("requests", 9), ("PyMySQL", 5), ("boto3", 14), ("pytz", 6))]
    assert "building six, idna into the own layer instead" in result.stdout
    # boto3's layer bundles six and requests' bundles idna: the own layer's copies shadow them
    assert "note: shadowing: the own layer also ships idna, six, which a Klayers layer provides" in result.stdout
    names = zip_names(out / "many-python3.12-x86_64.zip")
    assert "python/six.py" in names and "python/idna/__init__.py" in names


def test_prefer_klayers_reports_shadowing(api, invoke, write_recipe, tmp_path):
    path = write_recipe(name="shadow", packages=["idna", "requests==2.31.0"], python=["3.12"])
    result = invoke("build", path, "--prefer-klayers", "--region", "us-east-1", "--out", tmp_path / "dist")
    assert result.exit_code == 0, result.output
    assert arn("us-east-1", "Klayers-p312-idna", 3) in result.stdout
    assert ("note: shadowing: the own layer also ships idna, which a Klayers layer provides; attached last, "
            "its copy wins at run time") in result.stdout  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prefer-klayers"], "--prefer-klayers needs --region (the region whose Klayers layers to use)"),
        (["--region", "us-east-1"], "--region and --klayers-url only apply with --prefer-klayers"),
    ],
)
def test_prefer_klayers_usage_errors(invoke, args, message):
    result = invoke("build", "pymysql", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_prefer_klayers_bad_region_and_url(invoke, tmp_path, monkeypatch):
    result = invoke("build", "pymysql", "--prefer-klayers", "--region", "mars-1", "--out", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown AWS region 'mars-1'")
    result = invoke("build", "pymysql", "--prefer-klayers", "--region", "us-east-1", "--klayers-url", "nope", "--out", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --klayers-url: invalid Klayers API URL 'nope': expected http:// or https://"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("LAYERBUILD_KLAYERS_URL", "127.0.0.1:8080")
    result = invoke("build", "pymysql", "--prefer-klayers", "--region", "us-east-1", "--out", tmp_path)
    assert result.stderr.strip() == ("error: LAYERBUILD_KLAYERS_URL: invalid Klayers API URL '127.0.0.1:8080': "
                                     "expected http:// or https://")  # fmt: skip


def test_resolve_offline_uses_the_cache_and_says_so(api, invoke):
    first = resolve_json(invoke, "pymysql", "--region", "us-east-1")["python3.12-x86_64"]
    assert first["notes"] == []
    plan = resolve_json(invoke, "pymysql", "--region", "us-east-1", "--offline")["python3.12-x86_64"]
    assert plan["arns"] == [arn("us-east-1", "Klayers-p312-PyMySQL", 5)]
    assert plan["notes"][0].startswith("offline: Klayers answer from the cache, fetched ")
    assert requests_to(api, "/api/v2/p3.12/layers/latest/us-east-1") == 1


def test_prefer_klayers_finds_shadowing_through_bundled_dependencies(api, invoke, write_recipe, tmp_path):
    # Klayers' requests layer bundles urllib3 2.2.3 (its history says so); the own layer's urllib3 1.x overrides it.
    path = write_recipe(name="bundled", packages=["requests", "urllib3<2"], python=["3.12"])
    result = invoke("build", path, "--prefer-klayers", "--region", "us-east-1", "--out", tmp_path / "dist")
    assert result.exit_code == 0, result.output
    assert ("note: shadowing: the own layer also ships urllib3, which a Klayers layer provides; attached last, "
            "its copy wins at run time") in result.stdout  # fmt: skip
    assert requests_to(api, "/api/v2/p3.12/layers/us-east-1/requests") == 1


def test_prefer_klayers_without_history_still_builds_and_says_so(api, invoke, write_recipe, tmp_path):
    api.expect_request("/api/v2/p3.12/layers/us-east-1/lxml").respond_with_data("no", status=403)
    path = write_recipe(name="nohistory", packages=["lxml", "six"], python=["3.12"])
    result = invoke("build", path, "--prefer-klayers", "--region", "us-east-1", "--out", tmp_path / "dist")
    assert result.exit_code == 0, result.output
    assert "note: could not read what lxml's Klayers layer bundles: " in result.stdout
    assert "HTTP 403 FORBIDDEN" in result.stdout
    assert (tmp_path / "dist" / "nohistory-python3.12-x86_64.zip").is_file()
