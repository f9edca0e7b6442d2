"""Locked wheels, downloaded once: a content-addressed store shared by every target and build.

The wheels backend downloads the files it installs itself (instead of leaving it to uv) so that it
keeps the wheel archives: their members are already deflated, and the zip writer copies those
bytes into the layer instead of compressing 70 MB again (see zipwriter.RawSource).

Files live in $XDG_CACHE_HOME/layerbuild/wheels/SHA[:2]/SHA/FILENAME and are only ever written
under a temporary name, checked against the lock's sha256, then renamed: a reader never sees a
partial or unverified file. Every use checks the file against the sha256 it is stored under: a wheel
damaged or changed since is removed, one line on stderr names it, and it is downloaded again (hashing
costs far less than installing). Using a file touches it (cacheprune removes the least recently used).
Downloads honour UV_HTTP_TIMEOUT and UV_HTTP_RETRIES, as uv's own would, the system CA store and
the usual proxy variables.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerbuild.backends.indexes import local_path
from layerbuild.backends.wheels.index import IndexFile
from layerbuild.cache.builds import cache_root
from layerbuild.cache.prune import wheel_root
from layerbuild.errors import ResolveError
from layerbuild.util import integrity
from layerbuild.util.http import session, short_reason
from layerbuild.util.netsafe import (
    Deadline,
    NetLimitExceeded,
    deadline_seconds,
    iter_capped,
    redact_url,
    watchdog,
)
from layerbuild.util.threadpool import ThreadPool
from layerbuild.util.tls import requests_verify

MAX_PARALLEL = 6
# No wheel larger than Lambda's 250 MB unzipped limit can end up in a layer: the cap on any download
# (decoded bytes, whatever Content-Length says).
MAX_WHEEL_BYTES = 250 << 20
# A download's total deadline (per attempt): a minute, plus the time its size takes at 100 KB/s (a slow
# link); the cap's size when the server does not say. $LAYERBUILD_NET_DEADLINE overrides.
DOWNLOAD_BASE_SECONDS = 60.0
SLOWEST_BYTES_PER_SECOND = 100 * 1024
_BLOCK = 1 << 20
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def store_root() -> Path:
    return wheel_root(cache_root())


def http_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("UV_HTTP_TIMEOUT") or 60))
    except ValueError:
        return 60.0


def download_deadline(size: int | None) -> float:
    """Seconds one download may take in all, scaled for its size (the cap when unknown)."""
    size = size if size is not None and 0 <= size <= MAX_WHEEL_BYTES else MAX_WHEEL_BYTES
    return deadline_seconds(DOWNLOAD_BASE_SECONDS + size / SLOWEST_BYTES_PER_SECOND)


def http_retries() -> int:
    try:
        return max(0, int(os.environ.get("UV_HTTP_RETRIES") or 3))
    except ValueError:
        return 3


@dataclass(frozen=True)
class Download:
    package: str  # as the user wrote it in the lock, for messages
    file: IndexFile
    allowed: frozenset[str]  # sha256 digests the lock accepts
    index_url: str  # for messages: where the bytes came from


def stored_path(sha256: str, filename: str, root: Path | None = None) -> Path:
    return (root or store_root()) / sha256[:2] / sha256 / filename


def find_stored(download: Download, root: Path | None = None) -> Path | None:
    """A stored copy of the file, whichever of the lock's hashes it has."""
    candidates = [download.file.sha256.lower()] if download.file.sha256 else []
    candidates += sorted(download.allowed)
    for digest in candidates:
        if digest not in download.allowed:
            continue
        path = stored_path(digest, download.file.filename, root)
        if path.is_file() and intact(path, digest):
            try:
                os.utime(path)  # last use, for pruning
            except OSError:
                pass
            return path
    return None


def intact(path: Path, digest: str) -> bool:
    """Whether a stored file still has the sha256 it is stored under (checked on every use: a file damaged
    or changed since its download is removed, with one line saying so, and downloaded again)."""
    try:
        if integrity.file_sha256_hex(path) == digest:
            return True
        why = "empty (0 bytes)" if path.stat().st_size == 0 else f"sha256 does not match the {digest[:16]}... it is stored under"
        path.unlink(missing_ok=True)
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc})"
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    integrity.discarded(path, f"stored wheel {why}", "downloading it again")
    return False


def hash_mismatch_message(package: str, index_url: str) -> str:
    # Shared with the uv path, so a tampered mirror reads the same whichever installer met it.
    return (f"hash mismatch for {package}: the file downloaded from {redact_url(index_url)} does not match the hash in the "
            f"lock (changed or tampered upstream; re-lock only if you trust the new file)")  # fmt: skip


class Cancelled(Exception):
    """A download its caller no longer wanted (a head start the lock did not confirm)."""


def fetch(download: Download, root: Path | None = None, cancelled: Callable[[], bool] = lambda: False) -> Path:
    """The stored, verified file: from the store, or downloaded into it. cancelled() is asked between
    blocks: when it says so the download ends with Cancelled, leaving nothing behind."""
    key = download.file.filename
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # two targets of one build needing the same wheel download it once
        found = find_stored(download, root)
        if found:
            return found
        if local_path(download.file.url) is not None:  # a file:// index: copied into the store, checked alike
            return _copy_local(download, root or store_root(), cancelled)
        return _download(download, root or store_root(), cancelled)


def _download(download: Download, root: Path, cancelled: Callable[[], bool] = lambda: False) -> Path:
    import requests

    url, filename = download.file.url, download.file.filename
    attempts = http_retries() + 1
    reason = "no answer"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        fd, temp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".part", dir=root)
        try:
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as handle:
                head = Deadline(download_deadline(None))  # until the size is known: the cap's
                deadline = head
                try:
                    with watchdog(head), session().get(url, stream=True, timeout=head.timeout(http_timeout()),
                                                       verify=requests_verify()) as response:  # fmt: skip
                        if response.status_code != 200:
                            reason = f"HTTP {response.status_code}"
                            if response.status_code < 500 and response.status_code not in (408, 429):
                                break
                            raise _Retry()
                        expected = response.headers.get("Content-Length")
                        size = int(expected) if expected and expected.isdigit() else None
                        deadline = Deadline(download_deadline(size), start=head.start)
                        for block in iter_capped(response, url, MAX_WHEEL_BYTES, deadline, "wheel"):
                            if cancelled():
                                raise Cancelled()
                            handle.write(block)
                            digest.update(block)
                            received += len(block)
                        if expected and expected.isdigit() and int(expected) != received:
                            reason = f"connection closed after {received:,} of {int(expected):,} bytes"
                            raise _Retry()
                except NetLimitExceeded as exc:  # not retried: a slow or oversized answer stays so
                    reason = exc.detail
                    break
                except requests.RequestException as exc:
                    if deadline.expired:  # a read timed out at the deadline, or the watchdog cut a drip off
                        reason = deadline.exceeded(url, "wheel").detail
                        break
                    reason = short_reason(exc)
                    raise _Retry() from None
            sha = digest.hexdigest()
            if sha not in download.allowed:
                raise ResolveError(hash_mismatch_message(download.package, download.index_url))
            final = stored_path(sha, filename, root)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temp, 0o644)
            os.replace(temp, final)
            return final
        except _Retry:
            if attempt + 1 < attempts:
                time.sleep(min(4.0, 0.5 * 2**attempt))
        finally:
            Path(temp).unlink(missing_ok=True)
    retried = f" (retried {attempt} times)" if attempt else ""
    raise ResolveError(f"cannot download {filename} for {download.package} from {redact_url(url)}: {reason}{retried}")


class _Retry(Exception):
    pass


def _copy_local(download: Download, root: Path, cancelled: Callable[[], bool] = lambda: False) -> Path:
    """A wheel of a local (file://) index, copied into the store under the same checks as a download."""
    source, filename = local_path(download.file.url), download.file.filename
    root.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{os.getpid()}.", suffix=".part", dir=root)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle:
            try:
                with open(source, "rb") as reader:
                    for block in iter(lambda: reader.read(_BLOCK), b""):
                        if cancelled():
                            raise Cancelled()
                        handle.write(block)
                        digest.update(block)
            except OSError as exc:
                raise ResolveError(f"cannot read {filename} for {download.package} from {download.file.url}: "
                                   f"{exc.strerror or exc}") from None  # fmt: skip
        sha = digest.hexdigest()
        if sha not in download.allowed:
            raise ResolveError(hash_mismatch_message(download.package, download.index_url))
        final = stored_path(sha, filename, root)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp, 0o644)
        os.replace(temp, final)
        return final
    finally:
        Path(temp).unlink(missing_ok=True)


def fetch_all(downloads: list[Download], root: Path | None = None) -> list[Path]:
    """Every file, in order, downloading what the store lacks in parallel; the first error raises."""
    if not downloads:
        return []
    with ThreadPool(max_workers=min(MAX_PARALLEL, len(downloads))) as pool:
        futures = [pool.submit(fetch, d, root) for d in downloads]
        return [f.result() for f in futures]
