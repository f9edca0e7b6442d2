"""Questions to the package index (PEP 691 JSON, or PEP 503 HTML) that uv does not answer.

Used to tell a pure-Python sdist-only package (fine to build anywhere) from a compiled one
(needs the Docker backend) before spending minutes compiling it on the wrong machine, and to find
the URL and listed hash of each locked wheel, which the wheels backend downloads itself.
"""

from __future__ import annotations

import html
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,  # fmt: skip
)

from layerbuild.backends.indexes import is_find_links_directory, local_path
from layerbuild.limits import INDEX_PAGE_MAX_BYTES, read_capped_text
from layerbuild.util.http import session, short_reason
from layerbuild.util.netsafe import (
    Deadline,
    NetLimitExceeded,
    deadline_seconds,
    read_capped,
    redact_url,
    watchdog,
)
from layerbuild.util.tls import requests_verify

# PEP 503: the attributes of each file's anchor. Quoted values may hold a '>' that some indexes leave
# unescaped; a stray quote is taken as text (atomic: no backtracking over hostile pages).
_ANCHOR = re.compile(r"""<a\s((?>"[^"]*"|'[^']*'|[^>])*)>""", re.IGNORECASE)
_HREF = re.compile(r"""\bhref=(?:"([^"]+)"|'([^']+)')""", re.IGNORECASE)
_REQUIRES_PYTHON = re.compile(r"""\bdata-requires-python=(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_YANKED = re.compile(r"\bdata-yanked\b", re.IGNORECASE)  # PEP 592: present (with or without a reason) means yanked
_ATTEMPTS = 3
# PyPI's largest project pages (botocore, numpy: thousands of files) are a few MB of JSON; 64 MB decoded is
# an order of magnitude of room, and bounds what a hostile or broken index can make us hold.
MAX_PAGE_BYTES = INDEX_PAGE_MAX_BYTES  # a project page, served or local (limits.py says why)
# One page, every attempt and wait included: a 64 MB page at 1 MB/s with room to spare ($LAYERBUILD_NET_DEADLINE overrides).
PAGE_DEADLINE = 120.0


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str  # absolute
    sha256: str | None = None  # as the index lists it (a claim: downloads are checked against the lock)
    yanked: bool = False
    requires_python: str | None = None  # the release's Requires-Python, as the page gives it


class IndexUnavailable(Exception):
    """The project page could not be fetched; str() says which URL and why."""


def project_page_url(name: str, index_url: str) -> str:
    return f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"


def parse_listing(body: str, content_type: str, page_url: str) -> list[IndexFile]:
    """Pure: the files of a PEP 691 JSON or PEP 503 HTML project page, with absolute URLs."""
    files = []
    if "json" in content_type:
        for item in json_loads(body).get("files", []):
            hashes = item.get("hashes") or {}
            url = item["url"]
            if not url.startswith(("https://", "http://")):  # urljoin costs 8 us a file; numpy lists 4,400
                url = urljoin(page_url, url)
            yanked = item.get("yanked", False)  # false, true, or the reason (even an empty one means yanked)
            files.append(IndexFile(item["filename"], url, hashes.get("sha256"), yanked is not False and yanked is not None,
                                   item.get("requires-python") or None))  # fmt: skip
        return files
    for attributes in _ANCHOR.findall(body):
        found = _HREF.search(attributes)
        if found is None:
            continue
        link, _, fragment = html.unescape(found.group(1) or found.group(2)).partition("#")
        url = urljoin(page_url, link)
        filename = urlsplit(url).path.rsplit("/", 1)[-1]
        sha256 = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        requires = _REQUIRES_PYTHON.search(attributes)
        requires_python = html.unescape(requires.group(1) or requires.group(2) or "") if requires else ""
        files.append(IndexFile(filename, url, sha256, _YANKED.search(attributes) is not None, requires_python or None))
    return files


def json_loads(body: str) -> dict:
    from layerbuild.util.safetext import loads

    data = loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


# Local indexes, as uv reads them: a file:// URL naming a PEP 503 tree (DIR/PROJECT/index.html), or a
# find-links directory holding the distribution files themselves (uv gets --find-links for it).
def _project_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def local_listing(name: str, index_url: str) -> list[IndexFile] | None:
    """The files a local index lists for a project (a PEP 503 tree's index.html, or the matching files of a
    find-links directory); None when it has no such project. Raises IndexUnavailable when it cannot be read."""
    folder = local_path(index_url)
    if folder is None or not folder.is_dir():
        raise IndexUnavailable(f"{index_url}: no such directory")
    project = canonicalize_name(name)
    page = folder / project / "index.html"
    try:
        if page.is_file():
            body = read_capped_text(page, INDEX_PAGE_MAX_BYTES, "index page", IndexUnavailable)
            return parse_listing(body, "text/html", (folder / project).as_uri() + "/")
        if is_find_links_directory(index_url):
            found = [IndexFile(entry.name, Path(entry.path).as_uri()) for entry in sorted(os.scandir(folder), key=lambda e: e.name)
                     if entry.is_file() and _project_of(entry.name) == project]  # fmt: skip
            return found or None
    except OSError as exc:
        raise IndexUnavailable(f"{index_url}: cannot read {project}: {exc.strerror or exc}") from None
    return None


def project_listing(name: str, index_url: str, timeout: float = 20.0, attempts: int = _ATTEMPTS) -> list[IndexFile] | None:
    """The files an index lists for a project; None when it has no such project (404/410).

    Raises IndexUnavailable when the page cannot be fetched or read after bounded retries.
    """
    if local_path(index_url) is not None:
        return local_listing(name, index_url)
    url = project_page_url(name, index_url)
    shown = redact_url(url)
    headers = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    deadline = Deadline(deadline_seconds(PAGE_DEADLINE))
    with watchdog(deadline):
        return _listing(url, shown, headers, timeout, attempts, deadline)


def _listing(url: str, shown: str, headers: dict, timeout: float, attempts: int, deadline: Deadline) -> list[IndexFile] | None:
    import requests  # here, not at the top: a cache hit never needs it, and it costs ~0.1 s to import

    reason = "no answer"
    for attempt in range(max(1, attempts)):
        body = None
        try:
            with session().get(url, headers=headers, timeout=deadline.timeout(timeout), verify=requests_verify(),
                               stream=True) as response:  # fmt: skip
                if response.status_code == 200:
                    body = _page_text(read_capped(response, url, MAX_PAGE_BYTES, deadline, "project page"), response)
        except NetLimitExceeded as exc:
            raise IndexUnavailable(f"{shown}: {exc.detail}") from None
        except requests.RequestException as exc:
            response, reason = None, short_reason(exc)
            if deadline.expired:
                raise IndexUnavailable(f"{shown}: {deadline.exceeded(url, 'project page').detail}") from None
        if body is not None:
            try:
                return parse_listing(body, response.headers.get("Content-Type", ""), response.url or url)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                problem = "nested too deeply" if isinstance(exc, RecursionError) else redact_url(str(exc))
                raise IndexUnavailable(f"{shown}: unreadable project page ({problem})") from None
        if response is not None:
            if response.status_code in (404, 410):
                return None
            reason = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break
        if attempt + 1 < attempts:
            if 0.5 * 2**attempt >= deadline.remaining():
                break
            time.sleep(0.5 * 2**attempt)
    raise IndexUnavailable(f"{shown}: {reason}")


def _page_text(data: bytes, response) -> str:
    """The page as text, in the charset its Content-Type names (UTF-8 otherwise, as PEP 503 says)."""
    try:
        return data.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def project_files(name: str, index_url: str, timeout: float = 20.0) -> list[str] | None:
    """File names the index lists for a project, or None when the index cannot be asked."""
    try:
        listing = project_listing(name, index_url, timeout)
    except IndexUnavailable:
        return None
    return None if listing is None else [f.filename for f in listing]


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
