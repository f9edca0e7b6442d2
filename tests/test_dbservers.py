"""Self-test of tests/dbservers.py: a real MariaDB over TCP and a real moto server over HTTP, both on 127.0.0.1."""

import os

import boto3
import pytest
from dbservers import mariadb_server, mariadb_sql

PHOTO = "uploads/my photo 한글.jpg"


def test_mariadb_app_user_round_trips_utf8mb4_over_tcp(mariadb):
    assert mariadb.host == "127.0.0.1" and mariadb.database == "appdb" and mariadb.user == "app"
    assert mariadb_sql(mariadb, "SELECT 1") == "1\n"
    mariadb_sql(mariadb, "CREATE TABLE uploads (id INT PRIMARY KEY AUTO_INCREMENT, path VARCHAR(255) NOT NULL)"
                         " CHARACTER SET utf8mb4")
    mariadb_sql(mariadb, f"INSERT INTO uploads (path) VALUES ('{PHOTO}')")
    assert mariadb_sql(mariadb, "SELECT path, CHAR_LENGTH(path) FROM uploads") == f"{PHOTO}\t{len(PHOTO)}\n"
    assert mariadb_sql(mariadb, "SELECT @@bind_address") == "127.0.0.1\n"


def test_mariadb_app_user_has_no_rights_outside_appdb(mariadb):
    with pytest.raises(RuntimeError, match="denied"):
        mariadb_sql(mariadb, "CREATE DATABASE other")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_mariadb_server_leaves_nothing_behind():
    with mariadb_server() as db:
        assert alive(db.pid) and os.path.exists(db.socket)
    assert not alive(db.pid) and not os.path.exists(os.path.dirname(db.socket))


def test_mariadb_server_stops_when_the_test_fails():
    with pytest.raises(KeyboardInterrupt), mariadb_server() as db:
        raise KeyboardInterrupt
    assert not alive(db.pid) and not os.path.exists(os.path.dirname(db.socket))


def test_moto_secrets_manager_round_trip(moto, monkeypatch):
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert moto.startswith("http://127.0.0.1:")
    client = boto3.client("secretsmanager", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="AKIAFAKEDBSERVERS", aws_secret_access_key="fake-secret")
    client.create_secret(Name="app/db", SecretString='{"password": "한글-pw"}')
    assert client.get_secret_value(SecretId="app/db")["SecretString"] == '{"password": "한글-pw"}'
