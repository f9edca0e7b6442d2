"""Shared fixtures. Area-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
HOST_PYTHON = "%d.%d" % sys.version_info[:2]

# Counts bad inputs, faults, interrupts and lost artifacts; prints the summary line (tests/reliability_figures.py).
pytest_plugins = ["reliability_figures", "dbservers"]  # dbservers: the mariadb and moto fixtures


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr, output)."""
    from layerbuild.cli.main import main

    def _invoke(*args, env=None):
        return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return _invoke


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(name=..., packages=[...], **fields) -> path of a recipe YAML in tmp_path/recipes."""

    def _write(text: str | None = None, filename: str | None = None, **fields) -> Path:
        folder = tmp_path / "recipes"
        folder.mkdir(exist_ok=True)
        name = filename or f"{fields.get('name', 'sample')}.yaml"
        path = folder / name
        path.write_text(text if text is not None else yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
        return path

    return _write


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below folder with its bytes (for 'nothing changed' assertions)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Keep layerbuild's own caches out of the user's home; uv's download cache stays shared (it is safe)."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    # AWS: never the user's files or profile, never the instance metadata service (traffic off 127.0.0.1).
    aws = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    if "UV_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
