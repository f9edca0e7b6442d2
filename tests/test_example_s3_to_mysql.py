"""examples/s3-to-mysql end to end, on real parts: the layer built by layerbuild, a real MariaDB server, a moto
server for Secrets Manager, `layerbuild event` and `layerbuild invoke` as the example's README runs them."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from conftest import REPO
from dbservers import MariaDB, mariadb_sql

from layerbuild.verify.interpreters import find_local_python

EXAMPLE = REPO / "examples" / "s3-to-mysql"
PY = next((p for p in ("3.12", "3.11", "3.13") if find_local_python(p, "x86_64")), None)
KEYS = ["uploads/my photo 한글.jpg", "a+b c=d&e.txt", "reports/100% done (final).csv", "plain.bin"]
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_REGION": "us-east-1"}

pytestmark = [pytest.mark.network, pytest.mark.skipif(PY is None, reason="no local python3.12/3.11/3.13")]


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    from click.testing import CliRunner

    from layerbuild.cli.main import main

    out = tmp_path_factory.mktemp("example-dist")
    result = CliRunner().invoke(main, ["build", str(EXAMPLE / "recipe.yaml"), "--python", PY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / f"s3-to-mysql-python{PY}-x86_64.json").read_text())
    assert manifest["verified"] is True and "pymysql.cursors" in manifest["verification"]["modules"]
    return out / f"s3-to-mysql-python{PY}-x86_64.zip"


@pytest.fixture(scope="module")
def database(mariadb: MariaDB):
    mariadb_sql(mariadb, (EXAMPLE / "schema.sql").read_text())
    return mariadb


@pytest.fixture(scope="module")
def secret(moto, database: MariaDB):
    client = boto3.client("secretsmanager", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing-secret")  # fmt: skip
    value = {"host": database.host, "port": database.port, "username": database.user, "password": database.password,
             "dbname": database.database}  # fmt: skip
    client.create_secret(Name="prod/uploads-db", SecretString=json.dumps(value))
    return "prod/uploads-db"


def invoke_example(invoke, tmp_path: Path, layer: Path, moto_url: str, key: str, secret_id: str):
    event = invoke("event", "s3-put", "--bucket", "uploads", "--key", key, "--size", "2048")
    assert event.exit_code == 0, event.stderr
    event_path = tmp_path / "event.json"
    event_path.write_text(event.stdout)
    return invoke("invoke", "app.handler", "--code", EXAMPLE, "--layer", layer, "--event", event_path,
                  "--env", f"DB_SECRET_ID={secret_id}", "--timeout", "30",
                  env={**FAKE_AWS, "AWS_ENDPOINT_URL": moto_url})  # fmt: skip


def test_uploaded_keys_arrive_in_the_table_exactly(invoke, tmp_path, layer, database, moto, secret):
    for key in KEYS:
        result = invoke_example(invoke, tmp_path, layer, moto, key, secret)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"inserted": 1, "keys": [key]}
        assert "recorded 1 upload(s)" in result.stderr  # the handler's print is its log
        assert "testing-secret" not in result.output and database.password not in result.output
    rows = mariadb_sql(database, "SELECT bucket, HEX(object_key), size FROM uploads ORDER BY id").splitlines()
    assert [tuple(row.split("\t")) for row in rows] == [("uploads", key.encode("utf-8").hex().upper(), "2048") for key in KEYS]


def test_a_missing_secret_is_lambdas_error_object(invoke, tmp_path, layer, moto, secret):
    result = invoke_example(invoke, tmp_path, layer, moto, "x.txt", "no/such-secret")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "ResourceNotFoundException" and "GetSecretValue" in error["errorMessage"]


def test_the_handler_needs_the_layer_like_on_lambda(invoke, tmp_path, moto, secret):
    """Without the pymysql layer the import fails as on Lambda; boto3 (the runtime's) is there either way."""
    event = tmp_path / "event.json"
    event.write_text(invoke("event", "s3-put", "--bucket", "b", "--key", "k").stdout)
    result = invoke("invoke", "app.handler", "--code", EXAMPLE, "--event", event, "--python", PY,
                    "--env", f"DB_SECRET_ID={secret}", env={**FAKE_AWS, "AWS_ENDPOINT_URL": moto})  # fmt: skip
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError" and "No module named 'pymysql'" in error["errorMessage"]

