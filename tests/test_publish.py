"""Publishing against a real moto server over HTTP on 127.0.0.1."""

import json
import os
from pathlib import Path

import boto3
import pytest
import requests
from faultproxy import closed_url

from layerbuild.build.pipeline import build_target
from layerbuild.model.manifest import Manifest, PackagePin
from layerbuild.model.recipe import load_recipe, parse_recipe
from layerbuild.model.runtimes import make_target
from layerbuild.publish.plan import (
    DIRECT_UPLOAD_LIMIT,
    PublishError,
    bucket_for,
    describe,
    layer_to_publish,
    parse_share,
    sanitise_layer_name,
)
from layerbuild.util.tree import write_deterministic_zip

SECRET = "fakeSECRETkeyDoNotPrint0123456789abcdef"
TOKEN = "fakeSESSIONtokenDoNotPrint987654321"
REGIONS = ["us-east-1", "eu-west-1", "ap-northeast-2"]


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEPUBLISHTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for region in REGIONS:
        monkeypatch.delenv("LAYERBUILD_ENDPOINT_URL_" + region.upper().replace("-", "_"), raising=False)
    return moto_server


def lam(region):
    return boto3.client("lambda", region_name=region)


def versions(region, name):
    return [v["Version"] for v in lam(region).list_layer_versions(LayerName=name)["LayerVersions"]]


@pytest.fixture(scope="module")
def pymysql_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return build_target(load_recipe("pymysql"), make_target("3.12", "x86_64"), out_dir=out).zip_path


def assert_no_secrets(*texts):
    for text in texts:
        assert SECRET not in text and TOKEN not in text


def publish(invoke, *args):
    result = invoke("publish", *args)
    assert_no_secrets(result.stdout, result.stderr)
    return result


def test_publish_to_three_regions_then_again_is_unchanged(aws, invoke, pymysql_zip):
    args = [pymysql_zip, *[a for r in REGIONS for a in ("--region", r)], "--json"]
    first = publish(invoke, *args)
    assert first.exit_code == 0, first.stderr
    rows = json.loads(first.stdout)
    assert [r["region"] for r in rows] == REGIONS
    assert all(r["status"] == "published" and r["version"] == 1 for r in rows)
    assert rows[1]["arn"] == "arn:aws:lambda:eu-west-1:123456789012:layer:pymysql-py312-x86_64:1"
    detail = lam("eu-west-1").get_layer_version(LayerName="pymysql-py312-x86_64", VersionNumber=1)
    manifest = json.loads(pymysql_zip.with_suffix(".json").read_text())
    assert detail["Content"]["CodeSha256"] == manifest["code_sha256"]
    assert detail["CompatibleRuntimes"] == ["python3.12"] and detail["CompatibleArchitectures"] == ["x86_64"]
    assert detail["LicenseInfo"] == "MIT" and "PyMySQL==" in detail["Description"]

    again = publish(invoke, *args)
    assert again.exit_code == 0
    assert all(r["status"] == "unchanged" and r["version"] == 1 for r in json.loads(again.stdout))
    for region in REGIONS:
        assert versions(region, "pymysql-py312-x86_64") == [1]
    arns = json.loads(pymysql_zip.with_name("pymysql-python3.12-x86_64.arns.json").read_text())
    assert set(arns) == set(REGIONS) and arns["us-east-1"].endswith(":1")

    forced = publish(invoke, pymysql_zip, "--region", "us-east-1", "--force", "--json")
    assert json.loads(forced.stdout)[0]["version"] == 2


def test_changed_content_publishes_version_two(aws, invoke, tmp_path):
    recipe = parse_recipe({"name": "pub", "packages": ["six"], "license": "MIT"}, "pub.yaml")
    target = make_target("3.12", "x86_64")
    one = build_target(recipe, target, out_dir=tmp_path / "a")
    assert publish(invoke, one.zip_path, "--region", "us-east-1").exit_code == 0
    changed = parse_recipe({"name": "pub", "packages": ["six", "idna"], "license": "MIT"}, "pub.yaml")
    two = build_target(changed, target, out_dir=tmp_path / "b")
    result = publish(invoke, two.zip_path, "--region", "us-east-1", "--json")
    row = json.loads(result.stdout)[0]
    assert row["status"] == "published" and row["version"] == 2
    assert versions("us-east-1", "pub-py312-x86_64") == [2, 1]


def test_sharing_public_account_and_org_is_stable(aws, invoke, pymysql_zip):
    args = [pymysql_zip, "--region", "us-east-1", "--share", "public", "--share", "account:210987654321",
            "--share", "org:o-abc123defg"]
    assert publish(invoke, *args).exit_code == 0
    assert publish(invoke, *args).exit_code == 0  # a re-run neither fails nor duplicates
    policy = json.loads(lam("us-east-1").get_layer_version_policy(LayerName="pymysql-py312-x86_64", VersionNumber=1)["Policy"])
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert sorted(statements) == ["layerbuild-account-210987654321", "layerbuild-org-o-abc123defg", "layerbuild-public"]
    assert statements["layerbuild-public"]["Principal"] == "*"
    assert "210987654321" in json.dumps(statements["layerbuild-account-210987654321"]["Principal"])
    assert statements["layerbuild-org-o-abc123defg"]["OrganizationId"] == "o-abc123defg"
    assert all(s["Action"] == "lambda:GetLayerVersion" for s in statements.values())


def big_layer(tmp_path) -> "Path":
    """A real >50 MB layer zip (random bytes do not compress) with its manifest."""
    root = tmp_path / "tree"
    (root / "python" / "blob").mkdir(parents=True)
    (root / "python" / "blob" / "__init__.py").write_text("")
    with open(root / "python" / "blob" / "data.bin", "wb") as handle:
        handle.write(os.urandom(DIRECT_UPLOAD_LIMIT + 1024 * 1024))
    zip_path = tmp_path / "blob-python3.12-x86_64.zip"
    summary = write_deterministic_zip(root, zip_path)
    manifest = Manifest(name="blob", runtime="python3.12", python="3.12", architecture="x86_64", backend="wheels",
                        packages=[PackagePin("blob", "1.0")], file_count=summary.file_count,
                        zipped_bytes=summary.zipped_bytes, unzipped_bytes=summary.unzipped_bytes, sha256=summary.sha256,
                        code_sha256=summary.code_sha256, zip=zip_path.name, license="MIT", compatible_runtimes=["python3.12"])
    zip_path.with_suffix(".json").write_text(manifest.to_json())
    return zip_path


def test_large_layer_goes_through_s3(aws, invoke, tmp_path):
    zip_path = big_layer(tmp_path)
    result = publish(invoke, zip_path, "--region", "eu-west-1")
    assert result.exit_code == 1
    assert "over Lambda's 52,428,800-byte direct upload limit: add --s3-bucket BUCKET" in result.stderr
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="layers-eu-west-1", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    result = publish(invoke, zip_path, "--region", "eu-west-1", "--s3-bucket", "layers-{region}", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "published"
    manifest = json.loads(zip_path.with_suffix(".json").read_text())
    key = f"layerbuild/blob-py312-x86_64/{manifest['sha256']}.zip"
    assert s3.head_object(Bucket="layers-eu-west-1", Key=key)["ContentLength"] == manifest["zipped_bytes"]
    detail = lam("eu-west-1").get_layer_version(LayerName="blob-py312-x86_64", VersionNumber=1)
    assert detail["Content"]["CodeSha256"] == manifest["code_sha256"]
    again = publish(invoke, zip_path, "--region", "eu-west-1", "--s3-bucket", "layers-{region}", "--json")
    assert json.loads(again.stdout)[0]["status"] == "unchanged"


def test_failed_region_is_reported_and_a_rerun_completes_it(aws, invoke, pymysql_zip, monkeypatch):
    monkeypatch.setenv("LAYERBUILD_ENDPOINT_URL_EU_WEST_1", closed_url())
    args = [pymysql_zip, *[a for r in REGIONS for a in ("--region", r)], "--json"]
    result = publish(invoke, *args)
    assert result.exit_code == 1
    rows = {r["region"]: r for r in json.loads(result.stdout)}
    assert rows["eu-west-1"]["status"] == "failed" and "cannot reach the endpoint" in rows["eu-west-1"]["reason"]
    assert rows["us-east-1"]["status"] == rows["ap-northeast-2"]["status"] == "published"
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 publications failed: eu-west-1")
    monkeypatch.delenv("LAYERBUILD_ENDPOINT_URL_EU_WEST_1")
    rerun = publish(invoke, *args)
    assert rerun.exit_code == 0
    statuses = {r["region"]: r["status"] for r in json.loads(rerun.stdout)}
    assert statuses == {"us-east-1": "unchanged", "eu-west-1": "published", "ap-northeast-2": "unchanged"}
    for region in REGIONS:
        assert versions(region, "pymysql-py312-x86_64") == [1]


def test_dry_run_calls_nothing(aws, invoke, pymysql_zip, monkeypatch):
    result = publish(invoke, pymysql_zip, "--region", "us-east-1", "--region", "eu-west-1", "--share", "public", "--dry-run")
    assert result.exit_code == 0
    assert "would call lambda.publish_layer_version" in result.stdout
    assert "StatementId': 'layerbuild-public'" in result.stdout and "[eu-west-1]" in result.stdout
    for region in ("us-east-1", "eu-west-1"):
        assert lam(region).list_layers()["Layers"] == []
    # No endpoint, no credentials: a dry run still answers.
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_url())
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    plan = json.loads(publish(invoke, pymysql_zip, "--region", "us-east-1", "--dry-run", "--json").stdout)
    assert plan[0]["parameters"]["LayerName"] == "pymysql-py312-x86_64"
    assert plan[0]["parameters"]["Content"]["ZipFile"].startswith("<")


def test_snippet_formats(aws, invoke, pymysql_zip):
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:pymysql-py312-x86_64:1"
    assert publish(invoke, pymysql_zip, "--region", "us-east-1", "--format", "arn").stdout == arn + "\n"
    sam = publish(invoke, pymysql_zip, "--region", "us-east-1", "--format", "sam").stdout
    assert sam == f"Layers:\n  - {arn}  # us-east-1\n"
    tf = publish(invoke, pymysql_zip, "--region", "us-east-1", "--format", "terraform").stdout
    assert tf == f'layers = [\n  "{arn}",  # us-east-1\n]\n'


def test_recipe_builds_then_publishes(aws, invoke, tmp_path):
    result = publish(invoke, "pymysql", "--region", "us-west-2", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["arn"].endswith(":layer:pymysql-py312-x86_64:1")
    assert (tmp_path / "pymysql-python3.12-x86_64.arns.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["--region", "us-east-9"], "unknown AWS region 'us-east-9' (did you mean"),
    (["--region", "us-east-1", "--share", "account:123"], "an account id is 12 digits"),
    (["--region", "us-east-1", "--share", "org:o-SHOUT"], "an organization id looks like o-abc123defg"),
    (["--region", "us-east-1", "--share", "everyone"], "valid forms are public, account:123456789012, org:o-abc123defg"),
    (["--region", "us-east-1", "--layer-name", "bad name!"], "Lambda layer names are 1-140 of letters"),
    (["--region", "us-east-1", "--s3-bucket", "Bad_Bucket"], "is not a valid S3 bucket name"),
])
def test_bad_arguments_are_one_line_errors(aws, invoke, pymysql_zip, args, message):
    result = publish(invoke, pymysql_zip, *args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert lam("us-east-1").list_layers()["Layers"] == []


def test_zip_not_matching_its_manifest_is_refused(aws, invoke, pymysql_zip, tmp_path):
    copy = tmp_path / pymysql_zip.name
    copy.write_bytes(pymysql_zip.read_bytes() + b"tampered")
    copy.with_suffix(".json").write_text(pymysql_zip.with_suffix(".json").read_text())
    result = publish(invoke, copy, "--region", "us-east-1")
    assert result.exit_code == 1 and "does not match its manifest" in result.stderr
    (tmp_path / "lonely.zip").write_bytes(b"PK")
    result = publish(invoke, tmp_path / "lonely.zip", "--region", "us-east-1")
    assert result.exit_code == 1 and "no manifest beside the zip" in result.stderr


def test_no_region_anywhere(aws, invoke, pymysql_zip, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    result = publish(invoke, pymysql_zip)
    assert result.exit_code == 1 and "no region: pass --region REGION" in result.stderr


def test_pure_helpers():
    assert sanitise_layer_name("my layer/v1.2") == "my-layer-v1-2"
    share = parse_share("account:123456789012")
    assert share.statement_id == "layerbuild-account-123456789012"
    assert share.parameters() == {"StatementId": "layerbuild-account-123456789012", "Action": "lambda:GetLayerVersion",
                                  "Principal": "123456789012"}
    many = Manifest(name="big", runtime="python3.12", python="3.12", architecture="arm64", backend="wheels",
                    packages=[PackagePin(f"package-number-{i}", "1.0.0") for i in range(40)], file_count=1, zipped_bytes=1,
                    unzipped_bytes=1, sha256="0", code_sha256="0", zip="x.zip")
    text = describe(many)
    assert len(text) <= 256 and text.endswith(" ...") and text.startswith("big (python3.12 arm64): package-number-0==1.0.0")


def manifest_with(**changes):
    fields = dict(name="m", runtime="python3.12", python="3.12", architecture="x86_64", backend="wheels",
                  packages=[PackagePin("six", "1.17.0")], file_count=1, zipped_bytes=1, unzipped_bytes=1,
                  sha256="0", code_sha256="0", zip="m.zip", license="MIT")  # fmt: skip
    return Manifest(**{**fields, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"compatible_runtimes": ["python3.12", "python2.7"]},
     "m.zip: manifest runtime 'python2.7' is not a Lambda Python runtime (python3.8, "),
    ({"compatible_runtimes": [f"python3.{n}" for n in range(16)]},
     "m.zip: 16 compatible runtimes; Lambda accepts at most 15"),
    ({"license": "L" * 513}, "m.zip: license is 513 characters; Lambda accepts at most 512"),
    ({"architecture": "sparc"}, "m.zip: manifest unknown architecture 'sparc': Lambda architectures are x86_64, arm64"),
])  # fmt: skip
def test_manifests_lambda_would_refuse_are_refused_locally(changes, message):
    with pytest.raises(PublishError) as caught:
        layer_to_publish(Path("m.zip"), manifest_with(**changes))
    assert message in caught.value.message


def test_manifest_limits_at_the_edge_are_accepted():
    layer = layer_to_publish(Path("m.zip"), manifest_with(license="L" * 512, architecture="arm64",
                                                          compatible_runtimes=["python3.12", "python3.13"]))  # fmt: skip
    assert layer.publish_parameters() == {
        "LayerName": "m-py312-arm64", "Description": "m (python3.12 arm64): six==1.17.0",
        "CompatibleRuntimes": ["python3.12", "python3.13"], "CompatibleArchitectures": ["arm64"],
        "LicenseInfo": "L" * 512,
    }


@pytest.mark.parametrize("bucket,why", [
    ("ab", "3-63 of a-z"), ("x" * 64, "3-63 of a-z"), ("my..bucket", "3-63 of a-z"), ("-bucket", "3-63 of a-z"),
    ("192.168.10.20", "not formatted like an IP address"), ("my-.bucket", "no '-' next to '.'"),
    ("sthree-layers", "not a prefix or suffix S3 reserves"), ("layers-s3alias", "not a prefix or suffix S3 reserves"),
])  # fmt: skip
def test_bucket_names_s3_would_refuse(bucket, why):
    with pytest.raises(PublishError) as caught:
        bucket_for(bucket, "us-east-1")
    assert caught.value.message.startswith(f"--s3-bucket {bucket!r}: {bucket!r} is not a valid S3 bucket name (")
    assert why in caught.value.message
    assert bucket_for("layers-{region}.example", "eu-west-1") == "layers-eu-west-1.example"


def test_a_manifest_lambda_would_refuse_stops_the_cli_before_any_call(aws, invoke, pymysql_zip, tmp_path):
    copy = tmp_path / pymysql_zip.name
    copy.write_bytes(pymysql_zip.read_bytes())
    data = json.loads(pymysql_zip.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**data, "compatible_runtimes": ["python3.12", "nodejs20.x"]}))
    result = publish(invoke, copy, "--region", "us-east-1")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "manifest runtime 'nodejs20.x' is not a Lambda Python runtime" in result.stderr
    assert lam("us-east-1").list_layers()["Layers"] == []


def test_zip_arguments_that_do_not_fit(aws, invoke, pymysql_zip, tmp_path):
    missing = publish(invoke, tmp_path / "missing.zip", "--region", "us-east-1")
    assert missing.exit_code == 1 and missing.stderr == f"error: {tmp_path / 'missing.zip'}: no such zip\n"
    other_python = publish(invoke, pymysql_zip, "--region", "us-east-1", "--python", "3.13")
    assert other_python.exit_code == 1
    assert other_python.stderr == f"error: --python 3.13: {pymysql_zip.name} was built for Python 3.12\n"
    other_arch = publish(invoke, pymysql_zip, "--region", "us-east-1", "--arch", "arm64")
    assert other_arch.stderr == f"error: --arch arm64: {pymysql_zip.name} was built for x86_64\n"
    assert publish(invoke, pymysql_zip, "--region", "us-east-1", "--python", "3.12", "--arch", "x86_64").exit_code == 0


def test_layer_name_for_many_targets_is_refused_before_building(aws, invoke, tmp_path):
    result = publish(invoke, "pymysql", "--region", "us-east-1", "--python", "3.12", "--python", "3.13",
                     "--layer-name", "mine", "--out", tmp_path)  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == ("error: --layer-name names one layer but pymysql has 2 targets (python3.12-x86_64, "
                             "python3.13-x86_64); narrow with --python/--arch\n")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
