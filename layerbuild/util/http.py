"""The process's one HTTP session, shared by every thread that talks to an index or the Klayers API.

requests.get() opens a new session per call: a TCP connection, a TLS handshake and a fresh load of
the CA bundle for every project page and every wheel. One shared session keeps the connections to
the index and its file host open and hands them from one request to the next. On a 23-wheel
recipe (boto3, pydantic, flask...) that halved listing and downloading and saved ~0.9 CPU-seconds.

requests documents no thread-safety guarantee for Session; what is shared here is its urllib3 pool
manager (thread-safe by design) and settings that nothing changes after creation. Cookies are the
only state a response writes, under cookiejar's own lock.
"""

from __future__ import annotations

import threading

# Connections kept per host: above the threads that fetch at once (wheelstore.MAX_PARALLEL downloads,
# plus the listing and head-start threads of parallel targets). A request past it still runs, on a
# connection that is closed afterwards instead of kept.
POOL_SIZE = 32

_lock = threading.Lock()
_session = None


def session():
    """The shared requests.Session (made on first use: requests costs ~0.1 s to import)."""
    global _session
    with _lock:
        if _session is None:
            import requests

            from layerbuild.util.netsafe import (
                guarded_adapter,  # its connections tell netsafe.watchdog their sockets
            )

            made = requests.Session()
            for prefix in ("https://", "http://"):
                made.mount(prefix, guarded_adapter(pool_connections=8, pool_maxsize=POOL_SIZE))
            _session = made
        return _session


# requests' messages are long chains; these phrases are what a user can act on.
_REASONS = {"Connection refused": "Connection refused", "timed out": "timed out", "Connection reset": "Connection reset",
            "Name or service not known": "cannot resolve the host name",
            "Temporary failure in name resolution": "cannot resolve the host name",
            "NameResolutionError": "cannot resolve the host name",
            "certificate verify failed": "certificate verify failed", "IncompleteRead": "connection closed early",
            "Connection broken": "connection closed early"}  # fmt: skip


def known_reason(exc: Exception) -> str | None:
    """A network error in a few words when its message names a known cause, else None."""
    text = str(exc).lower()
    for phrase, reason in _REASONS.items():
        if phrase.lower() in text:
            return reason
    return None


def short_reason(exc: Exception) -> str:
    """A network error in a few words: the known cause its message names, else its type."""
    return known_reason(exc) or type(exc).__name__
