"""The Klayers API client: HTTP with bounded retries, and an on-disk response cache.

Side effects live here (network, cache files, the clock, sleeping); parsing and matching are in
klayers_model. A response is validated before it is cached and written atomically, so a malformed
or half-written answer never poisons the cache.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from layerbuild.errors import KlayersError, KlayersNotFound
from layerbuild.klayers.model import (
    DEFAULT_API_URL,
    KlayersLayer,
    KlayersTarget,
    history_path,
    latest_path,
    parse_layers,
)
from layerbuild.util.http import session
from layerbuild.util.netsafe import (
    Deadline,
    NetLimitExceeded,
    deadline_seconds,
    read_capped,
    redact_url,
    watchdog,
)
from layerbuild.util.tls import requests_verify

API_URL_ENV = "LAYERBUILD_KLAYERS_URL"
TTL_ENV = "LAYERBUILD_KLAYERS_TTL"
DEFAULT_TTL = 6 * 3600  # Klayers rebuilds layers daily at most; a few hours keeps lookups fast and fresh
DEFAULT_TIMEOUT = 10.0
# One answer, every attempt and wait included, within the README's 10 s ($LAYERBUILD_NET_DEADLINE overrides).
DEFAULT_DEADLINE = 10.0
# The largest real answer (a region's latest listing, ~700 layers) is under 1 MB: 16 MB decoded is room to
# grow, and bounds what a hostile or broken mirror can make us hold (JSON parsing costs ~10x the text).
MAX_ANSWER_BYTES = 16 << 20
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.5
RETRY_AFTER_CAP = 30.0  # never wait longer than this on the server's say-so
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layerbuild" / "klayers"


def api_url(explicit: str | None = None, option: str = "--api-url") -> str:
    url = explicit or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    if not url.startswith(("http://", "https://")):
        source = option if explicit else API_URL_ENV
        raise KlayersError(f"{source}: invalid Klayers API URL {redact_url(url)!r}: expected http:// or https://")
    return url.rstrip("/")


def cache_ttl(explicit: float | None = None) -> float:
    """Seconds a cached answer stays fresh: --cache-ttl, else $LAYERBUILD_KLAYERS_TTL, else 6 hours."""
    if explicit is not None:
        if explicit < 0:
            raise KlayersError(f"--cache-ttl: must be 0 or more seconds, got {explicit}")
        return float(explicit)
    raw = os.environ.get(TTL_ENV)
    if raw is None or raw.strip() == "":
        return float(DEFAULT_TTL)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise KlayersError(f"{TTL_ENV}: must be a number of seconds (0 or more), got {raw!r}")
    return value


def describe_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


@dataclass
class Answer:
    """Layers from one API path, and where they came from."""

    url: str  # redacted (no userinfo, no token): it is shown and written to --json
    layers: list[KlayersLayer]
    fetched_at: float
    from_cache: bool
    age: float  # seconds since fetched_at
    warnings: list[str] = field(default_factory=list)  # items dropped from the answer, one line each

    def provenance(self) -> str:
        if not self.from_cache:
            return f"from {self.url}"
        return f"from the cache, fetched {describe_age(self.age)} ago from {self.url}"


class KlayersClient:
    def __init__(self, base_url: str | None = None, *, ttl: float | None = None, offline: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, max_attempts: int = MAX_ATTEMPTS, backoff: float = BACKOFF_BASE,
                 retry_after_cap: float = RETRY_AFTER_CAP, cache: Path | None = None,
                 now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 deadline: float | None = None, warn: Callable[[str], None] | None = None):  # fmt: skip
        self.base_url = api_url(base_url)
        self.ttl = cache_ttl(ttl)
        self.offline = offline
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.retry_after_cap = retry_after_cap
        self.cache = Path(cache) if cache else cache_dir()
        self.now = now
        self.sleep = sleep
        self.deadline = deadline if deadline is not None else deadline_seconds(DEFAULT_DEADLINE)
        self.warn = warn or _warn
        self._warned: set[str] = set()

    # -- public API --------------------------------------------------------------------------
    def latest(self, target: KlayersTarget, region: str) -> Answer:
        """Every package's latest layer in region for target."""
        return self.get(latest_path(target, region))

    def history(self, target: KlayersTarget, region: str, package: str) -> Answer:
        """Every layer version of one package in region, deprecated ones included."""
        return self.get(history_path(target, region, package))

    def get(self, path: str) -> Answer:
        url = self.base_url + path
        shown = redact_url(url)
        cached = self._read_cache(url)
        now = self.now()
        if self.offline:
            if cached is None:
                raise KlayersError(f"--offline: no cached answer for {shown}; run once without --offline to fetch it")
            return self._answer(shown, cached[1], cached[0], True, now - cached[0], cached[2])
        if cached is not None and 0 <= now - cached[0] < self.ttl:
            return self._answer(shown, cached[1], cached[0], True, now - cached[0], cached[2])
        try:
            body = self._fetch(url)
        except KlayersNotFound:
            raise
        except KlayersError as exc:
            if cached is None:
                raise
            # Say that an older answer exists rather than silently serving it.
            raise KlayersError(f"{exc}; a cached answer from {describe_age(now - cached[0])} ago exists: "
                               "use --offline to use it") from None  # fmt: skip
        warnings: list[str] = []
        layers = parse_layers(body, shown, warnings)  # raises before anything is cached
        fetched_at = self.now()
        self._write_cache(url, body, fetched_at)
        return self._answer(shown, layers, fetched_at, False, 0.0, warnings)

    def _answer(self, shown: str, layers, fetched_at: float, from_cache: bool, age: float, warnings: list[str]) -> Answer:
        for line in warnings:
            if line not in self._warned:  # an answer read twice (latest, then from the cache) warns once
                self._warned.add(line)
                self.warn(line)
        return Answer(shown, layers, fetched_at, from_cache, age, warnings)

    # -- HTTP ----------------------------------------------------------------------------------
    def _fetch(self, url: str):
        """The decoded JSON body. Every attempt and wait shares one total deadline (self.deadline seconds);
        each body is read capped at MAX_ANSWER_BYTES decoded bytes."""
        shown = redact_url(url)
        deadline = Deadline(self.deadline)
        with watchdog(deadline):
            return self._attempts(url, shown, deadline)

    def _attempts(self, url: str, shown: str, deadline: Deadline):
        import requests  # here, not at the top: answers from the cache never need it (~0.1 s to import)

        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            wait = self.backoff * (2 ** (attempt - 1))
            try:
                with session().get(url, timeout=deadline.timeout(self.timeout), verify=requests_verify(), stream=True,
                                   headers={"Accept": "application/json"}) as response:  # fmt: skip
                    if response.status_code == 200:
                        return _decode_json(read_capped(response, url, MAX_ANSWER_BYTES, deadline, "Klayers answer"),
                                            shown)  # fmt: skip
                    reason = _printable(response.reason or "")
                    retry_after = _retry_after(response.headers.get("Retry-After"), self.now())
            except NetLimitExceeded as exc:
                raise KlayersError(f"{shown}: {exc.detail}") from None
            except requests.RequestException as exc:
                if deadline.expired:  # a read timed out, or the watchdog cut a dripping answer off
                    raise KlayersError(f"{shown}: {deadline.exceeded(url, 'Klayers answer').detail}") from None
                if isinstance(exc, requests.Timeout):
                    problem = f"no answer within {self.timeout:g}s"
                elif isinstance(exc, requests.ConnectionError):
                    problem = f"cannot connect ({_short(exc)})"
                else:
                    raise KlayersError(f"{shown}: request failed: {_short(exc)}") from None
            else:
                status = f"HTTP {response.status_code} {reason}".strip()
                if response.status_code == 404:
                    raise KlayersNotFound(f"{shown}: {status} (unknown region, Python version or package?)")
                if response.status_code not in RETRY_STATUSES:
                    raise KlayersError(f"{shown}: {status}")
                problem = status
                if retry_after is not None:
                    wait = retry_after
            if attempt < self.max_attempts:
                wait = min(max(wait, 0.0), self.retry_after_cap)
                if wait >= deadline.remaining():
                    raise KlayersError(f"{shown}: {problem} after {attempt} attempt{'s' if attempt > 1 else ''}; "
                                       f"no time left for another within the {self.deadline:g}s deadline")  # fmt: skip
                self.sleep(wait)
        raise KlayersError(f"{shown}: {problem} after {self.max_attempts} attempts")

    # -- cache ---------------------------------------------------------------------------------
    def _cache_file(self, url: str) -> Path:
        return self.cache / (_url_key(url)[:32] + ".json")

    def _read_cache(self, url: str) -> tuple[float, list[KlayersLayer], list[str]] | None:
        """(fetched_at, layers, warnings), or None for a miss. A damaged file is removed: it is a miss, never
        an error (however it is damaged: cut short, not JSON, nested past the parser's depth)."""
        path = self._cache_file(url)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        try:
            entry = json.loads(text)
            if entry.get("url_sha256") != _url_key(url) and not (entry.get("url") == url == redact_url(url)):
                return None  # another URL's entry (a hash-prefix collision), or an older one that held a secret
            warnings: list[str] = []
            return float(entry["fetched_at"]), parse_layers(entry["body"], redact_url(url), warnings), warnings
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, KlayersError):
            path.unlink(missing_ok=True)
            return None

    def _write_cache(self, url: str, body, fetched_at: float) -> None:
        path = self._cache_file(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        except OSError:
            return  # an unwritable cache only costs speed
        try:
            # The URL as shown (no password, no token); the key says which URL without holding it.
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"url": redact_url(url), "url_sha256": _url_key(url), "fetched_at": fetched_at, "body": body},
                          handle)  # fmt: skip
            os.replace(name, path)
        except (OSError, ValueError, RecursionError):
            pass
        finally:
            Path(name).unlink(missing_ok=True)


def _warn(line: str) -> None:
    """Where a dropped item is reported (stderr, one line)."""
    import click

    from layerbuild.util.safetext import printable

    click.echo(f"warning: {printable(line)}", err=True)


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _decode_json(data: bytes, shown: str):
    try:
        return json.loads(data)
    except RecursionError:
        raise KlayersError(f"{shown}: malformed Klayers response: JSON nested too deeply ({len(data):,} bytes); "
                           "nothing was cached") from None  # fmt: skip
    except ValueError:
        raise KlayersError(f"{shown}: malformed Klayers response: not valid JSON (HTTP 200, {len(data):,} bytes); "
                           "nothing was cached") from None  # fmt: skip


def _printable(text: str) -> str:
    """An HTTP reason phrase, escaped and cut short (it comes from the server)."""
    from layerbuild.util.safetext import printable

    return printable(text)[:100]


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when else None


def _short(exc: Exception) -> str:
    """The known cause (connection refused, name resolution...) or the message, cut to 200 characters."""
    from layerbuild.util.http import known_reason
    from layerbuild.util.netsafe import redact_text

    reason = known_reason(exc)
    if reason:
        return reason
    text = " ".join(redact_text(str(exc)).split())
    return text if len(text) <= 200 else text[:197] + "..."
