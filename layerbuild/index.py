"""Questions to the package index (PEP 691 JSON, or PEP 503 HTML) that uv does not answer.

Used to tell a pure-Python sdist-only package (fine to build anywhere) from a compiled one
(needs the Docker backend) before spending minutes compiling it on the wrong machine.
"""

from __future__ import annotations

import re
import time

from packaging.utils import canonicalize_name, parse_wheel_filename, InvalidWheelFilename

from .tls import requests_verify

DEFAULT_INDEX_URL = "https://pypi.org/simple"
_HREF = re.compile(r'href="([^"]+)"', re.IGNORECASE)
_ATTEMPTS = 3


def project_files(name: str, index_url: str, timeout: float = 20.0) -> list[str] | None:
    """File names the index lists for a project, or None when the index cannot be asked."""
    import requests  # here, not at the top: a cache hit never needs it, and it costs ~0.1 s to import

    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    headers = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    for attempt in range(_ATTEMPTS):
        try:
            response = requests.get(url, headers=headers, timeout=timeout, verify=requests_verify())
        except requests.RequestException:
            response = None
        if response is not None and response.status_code == 200:
            if "json" in response.headers.get("Content-Type", ""):
                try:
                    return [f["filename"] for f in response.json().get("files", [])]
                except (ValueError, KeyError, TypeError, AttributeError):
                    return None
            return [href.split("#", 1)[0].rsplit("/", 1)[-1] for href in _HREF.findall(response.text)]
        if response is not None and response.status_code < 500 and response.status_code != 429:
            return None
        time.sleep(0.5 * 2**attempt)
    return None


def ships_platform_wheels(filenames: list[str]) -> bool:
    """True when any release has a wheel that is not pure Python: the project is compiled."""
    for filename in filenames:
        if not filename.endswith(".whl"):
            continue
        try:
            _, _, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if any(tag.platform != "any" for tag in tags):
            return True
    return False
