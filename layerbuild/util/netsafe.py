"""What comes back over the network, bounded: redacted URLs, capped reads, total deadlines.

The single place for three facts (issue #16):

- A URL is shown or stored only through ``redact_url`` / ``redact_text``: userinfo becomes
  ``***@`` and token-like query parameters (token, key, secret, password, signature, AWS
  pre-signed parts...) become ``***``.
- A response body is read only through ``iter_capped`` / ``read_capped``: decoded
  (decompressed) bytes are counted as they arrive and the read stops at a cap, so a small gzip
  answer cannot inflate to gigabytes in memory.
- Every network operation has a total deadline (``Deadline``), not only a per-read timeout: the
  body is read in pieces of at most one socket read each and the clock is checked between them,
  and ``watchdog(deadline)`` shuts down the sockets the block's requests use when the deadline
  passes, so a server dripping one byte every 2 s, in its headers or its body, is cut off at the
  deadline. ``LAYERBUILD_NET_DEADLINE`` (seconds) overrides every default deadline: users on very
  slow links raise it, tests lower it. (``guarded_adapter`` is what the shared session mounts so
  that the watchdog sees the sockets.)

Pure helpers apart from the clock and the response object handed in.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

DEADLINE_ENV = "LAYERBUILD_NET_DEADLINE"
MASK = "***"

# Query parameters whose value is a secret (compared case-insensitively, '-' and '_' ignored).
_SECRET_KEYS = frozenset(k.replace("-", "").replace("_", "") for k in (
    "token", "access_token", "refresh_token", "id_token", "auth", "authorization", "key", "api_key", "apikey",
    "secret", "client_secret", "password", "passwd", "pwd", "pass", "signature", "sig", "credential",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
    "session_token", "sessiontoken", "security_token",
))  # fmt: skip
# A URL inside free text (uv's stderr, botocore's messages): scheme://... up to a space or a quote.
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"'`<>]+""")
_BLOCK = 64 * 1024


def _secret_key(name: str) -> bool:
    plain = name.lower().replace("-", "").replace("_", "")
    return plain in _SECRET_KEYS or plain.endswith(("token", "secret", "password", "signature"))


def redact_url(url: str) -> str:
    """The URL with its userinfo replaced by *** and the values of token-like query parameters by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_userinfo_loosely(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_key(k) for k, _ in pairs):
            query = "&".join(f"{quote(k, safe='')}={MASK if _secret_key(k) else quote(v, safe='')}" for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_userinfo_loosely(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = MASK + "@" + authority.rsplit("@", 1)[1]
    return scheme + sep + authority + slash + tail


def redact_text(text: str) -> str:
    """Every URL inside free text (an error message, a tool's stderr) redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))


def host_of(url: str) -> str:
    """host[:port] of a URL, never its userinfo (for one-line errors)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return redact_url(url)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host or redact_url(url)


def size_text(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MB"
    return f"{count:,} bytes"


# -- deadlines ----------------------------------------------------------------------------------------
def deadline_seconds(default: float) -> float:
    """$LAYERBUILD_NET_DEADLINE when set to a positive number of seconds, else default."""
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if 0 < value < float("inf"):
            return value
    return default


class NetLimitExceeded(Exception):
    """A response over its cap or past its deadline; str() is one line naming the host (detail: without it)."""

    def __init__(self, url: str, detail: str):
        self.host = host_of(url)
        self.detail = detail
        super().__init__(f"{self.host}: {detail}")


class ResponseTooLarge(NetLimitExceeded):
    pass


class DeadlineExceeded(NetLimitExceeded):
    pass


class Deadline:
    """A total time budget for one network operation, from now."""

    def __init__(self, seconds: float, clock=time.monotonic, start: float | None = None):
        self.seconds = float(seconds)
        self._clock = clock
        self.start = clock() if start is None else start
        self.end = self.start + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.end

    def timeout(self, per_read: float) -> float:
        """A per-read timeout that does not outlast the deadline (never 0: requests rejects it)."""
        return max(0.05, min(per_read, self.remaining()))

    def check(self, url: str, what: str = "answer") -> None:
        if self.expired:
            raise self.exceeded(url, what)

    def exceeded(self, url: str, what: str = "answer") -> DeadlineExceeded:
        return DeadlineExceeded(url, f"no complete {what} within the {self.seconds:g}s deadline "
                                     f"(set {DEADLINE_ENV} to allow more)")  # fmt: skip


# -- capped reads -------------------------------------------------------------------------------------
def iter_capped(response, url: str, cap: int, deadline: Deadline, what: str = "answer") -> Iterator[bytes]:
    """The decoded body of a requests response opened with stream=True, in blocks; raises ResponseTooLarge
    past cap decoded bytes (or a larger Content-Length) and DeadlineExceeded past the deadline."""
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")
    if declared.isdigit() and not encoded and int(declared) > cap:
        raise _too_large(url, cap, what)
    received = 0
    for block in _blocks(response):
        received += len(block)
        if received > cap:
            raise _too_large(url, cap, what)
        yield block
        deadline.check(url, what)
    deadline.check(url, what)


def read_capped(response, url: str, cap: int, deadline: Deadline, what: str = "answer") -> bytes:
    return b"".join(iter_capped(response, url, cap, deadline, what))


def _too_large(url: str, cap: int, what: str) -> ResponseTooLarge:
    return ResponseTooLarge(url, f"{what} larger than the {size_text(cap)} cap (after decompression); refused")


def _blocks(response) -> Iterator[bytes]:
    """At most one socket read per block (read1), so the caller sees the clock between slow bytes."""
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3: whole blocks (the deadline is then checked less often)
        yield from response.iter_content(_BLOCK)
        return
    while True:
        block = _read1(read1)
        if not block:  # read1 answers b"" only at the end of the body
            return
        yield block


def _read1(read1) -> bytes:
    """One read, urllib3's errors as requests' (what iter_content would raise; a stalled read is a Timeout)."""
    import requests
    from urllib3.exceptions import (
        DecodeError,
        ProtocolError,
        ReadTimeoutError,
        SSLError,
    )

    try:
        return read1(_BLOCK, decode_content=True)
    except ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from None
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None


# -- the watchdog: sockets shut down at the deadline ----------------------------------------------------------
_current = threading.local()


class _Watch:
    def __init__(self):
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.fired = False

    def add(self, sock) -> None:
        with self.lock:
            # Only the answer in flight: an earlier one's connection may be back in the pool, another thread's.
            self.sockets = [sock]
            if self.fired:
                _shutdown(sock)

    def fire(self) -> None:
        with self.lock:
            self.fired = True
            for sock in self.sockets:
                _shutdown(sock)


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread (close() would not)
    except (OSError, AttributeError):
        pass


@contextmanager
def watchdog(deadline: Deadline):
    """Within the block, every socket this thread gets an HTTP answer on (through guarded_adapter) is shut
    down when the deadline passes: a read blocked on a server that drips its status line or headers ends
    then, as an error the caller reads as "past the deadline" (deadline.expired)."""
    watch = _Watch()
    timer = threading.Timer(max(0.0, deadline.remaining()), watch.fire)
    timer.daemon = True
    previous = getattr(_current, "watch", None)
    _current.watch = watch
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _current.watch = previous


def _watched(sock) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.add(sock)


def guarded_adapter(**kwargs):
    """A requests HTTPAdapter whose connections report their socket to the thread's watchdog."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _HTTPConnection(HTTPConnection):
        def getresponse(self, *args, **kw):
            _watched(self.sock)
            return super().getresponse(*args, **kw)

    class _HTTPSConnection(HTTPSConnection):
        def getresponse(self, *args, **kw):
            _watched(self.sock)
            return super().getresponse(*args, **kw)

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    pools = {"http": _HTTPPool, "https": _HTTPSPool}

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kw):
            super().init_poolmanager(*args, **kw)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, *args, **kw):
            manager = super().proxy_manager_for(*args, **kw)
            manager.pool_classes_by_scheme = pools
            return manager

    return _Adapter(**kwargs)
