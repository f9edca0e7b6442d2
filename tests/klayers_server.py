"""Serve tests/fixtures/klayers/ from a pytest-httpserver on 127.0.0.1 in the Klayers API's paths (test helper).

latest/<pyver>/<region>.json            -> GET /api/v2/<pyver>/layers/latest/<region>
history/<pyver>/<region>/<package>.json -> GET /api/v2/<pyver>/layers/<region>/<package>
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "klayers"


def fixture_json(relative: str):
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def serve_klayers(server) -> str:
    """Register every fixture on server; returns the base URL to configure."""
    for path in sorted((FIXTURES / "latest").glob("*/*.json")):
        pyver, region = path.parent.name, path.stem
        server.expect_request(f"/api/v2/{pyver}/layers/latest/{region}", method="GET").respond_with_data(
            path.read_bytes(), content_type="application/json")
    for path in sorted((FIXTURES / "history").glob("*/*/*.json")):
        pyver, region, package = path.parent.parent.name, path.parent.name, path.stem
        server.expect_request(f"/api/v2/{pyver}/layers/{region}/{package}", method="GET").respond_with_data(
            path.read_bytes(), content_type="application/json")
    return base_url(server)


def base_url(server) -> str:
    url = server.url_for("/").rstrip("/")
    assert url.startswith("http://127.0.0.1:"), url  # tests never aim traffic anywhere else
    return url


def requests_to(server, path: str) -> int:
    """How many requests the server has seen for path."""
    return sum(1 for request, _ in server.log if request.path == path)
