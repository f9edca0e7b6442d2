"""Loopback servers that misbehave on purpose (test helper; binds 127.0.0.1 only).

- ``FaultPlan``: what to do with request number n (pass, HTTP status, drop the connection, stall,
  truncate the body). Faults are counted so tests can assert bounded retries.
- ``PackageIndex``: a tiny PEP 503 index serving wheels built in memory, with a FaultPlan per path.
- ``FaultProxy``: an HTTP reverse proxy in front of a real server (e.g. moto) that injects the
  plan's faults, e.g. AWS throttling (429 TooManyRequestsException) for the first N calls.
Every wait is bounded (stalls end when the server stops or after ``stall_seconds``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PASS, STATUS, DROP, STALL, TRUNCATE, THROTTLE = "pass", "status", "drop", "stall", "truncate", "throttle"
SLOW = "slow"  # the whole body, in pieces, a pause before each (stall_seconds in all): slow but never silent for long
DROP_AFTER = "drop-after"  # forward the request, then hang up instead of answering (the server did the work)


@dataclass
class FaultPlan:
    """Faults for the first `count` matching requests (count=None: every request), then pass."""

    kind: str = PASS
    count: int | None = None
    status: int = 500
    stall_seconds: float = 30.0
    match: str = ""  # only requests whose path contains this (and whose method is in methods) count
    methods: tuple[str, ...] = ()
    injected: int = 0
    seen: list[str] = field(default_factory=list)

    def applies(self, method: str, path: str) -> bool:
        if self.match not in path or (self.methods and method not in self.methods):
            return False
        self.seen.append(f"{method} {path}")
        if self.kind == PASS or (self.count is not None and self.injected >= self.count):
            return False
        self.injected += 1
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler, owner):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), handler)

    def handle_error(self, request, client_address):
        pass  # clients hanging up on injected faults are the point, not news


class _Base:
    """Start/stop a threaded loopback server; stalled handlers are released on stop."""

    handler: type

    def __init__(self):
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.server = _Server(self.handler, self)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _fault(handler: BaseHTTPRequestHandler, plan: FaultPlan, body: bytes | None = None, content_type="text/plain"):
    """Carry out a fault on this request (TRUNCATE and SLOW need the real body)."""
    owner = handler.server.owner
    if plan.kind == DROP:
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return
    if plan.kind == STALL:
        owner.stop_event.wait(plan.stall_seconds)
        handler.close_connection = True
        return
    if plan.kind == THROTTLE:
        payload = json.dumps({"__type": "TooManyRequestsException", "message": "Rate exceeded (injected)",
                              "Reason": "CallerRateLimitExceeded"}).encode()  # fmt: skip
        handler.send_response(429)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("x-amzn-ErrorType", "TooManyRequestsException")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        return
    if plan.kind == STATUS:
        payload = f"injected {plan.status}\n".encode()
        handler.send_response(plan.status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        return
    if plan.kind == TRUNCATE and body is not None:
        # Promise the whole body, send half, hang up.
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return
    if plan.kind == SLOW and body is not None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        pieces = 20
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            if owner.stop_event.wait(plan.stall_seconds / pieces):
                break
            handler.wfile.write(body[start:start + step])
            handler.wfile.flush()
        return
    raise AssertionError(f"unknown fault {plan.kind!r}")


# --- a PEP 503 package index -----------------------------------------------------------------


def make_wheel(name: str, version: str, files: dict[str, bytes] | None = None, requires: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """A valid pure-Python wheel built in memory: (file name, bytes). requires: its Requires-Dist lines."""
    dist = name.replace("-", "_")
    files = dict(files or {f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode()})
    info = f"{dist}-{version}.dist-info"
    needs = "".join(f"Requires-Dist: {r}\n" for r in requires)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{needs}".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: faultproxy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


_BACKEND_TEMPLATE = """
import base64, hashlib, json, os, sys, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    @BEFORE@
    tag = @TAG@
    info = "@DIST@-@VERSION@.dist-info"
    wheel = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: %s\\nTag: %s\\n" % (str(tag.endswith("-any")).lower(), tag)
    files = {"@DIST@/__init__.py": b"X = 1\\n",
             info + "/METADATA": b"Metadata-Version: 2.1\\nName: @NAME@\\nVersion: @VERSION@\\n",
             info + "/WHEEL": wheel.encode()}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append(info + "/RECORD,,")
    files[info + "/RECORD"] = ("\\n".join(record) + "\\n").encode()
    filename = "@DIST@-@VERSION@-%s.whl" % tag
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return filename
"""


def in_tree_sdist(name: str, version: str, tag: str = '"py3-none-any"', before_build: str = "pass") -> dict[str, str]:
    """The files of a real source distribution (for PackageIndex.add_sdist) whose in-tree PEP 517 backend,
    with no build requirements, writes a one-module wheel. tag: a Python expression for the wheel's tag,
    evaluated as it builds (so it can name the building interpreter); before_build: one statement run first."""
    backend = (_BACKEND_TEMPLATE.replace("@BEFORE@", before_build).replace("@TAG@", tag)
               .replace("@DIST@", name.replace("-", "_")).replace("@NAME@", name).replace("@VERSION@", version))  # fmt: skip
    pyproject = (f'[build-system]\nrequires = []\nbuild-backend = "inbackend"\nbackend-path = ["."]\n\n'
                 f'[project]\nname = "{name}"\nversion = "{version}"\n')  # fmt: skip
    return {"pyproject.toml": pyproject, "inbackend.py": backend}


class _IndexHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def setup(self):
        super().setup()
        index: PackageIndex = self.server.owner
        with index.lock:
            index.connections += 1

    def do_GET(self):
        index: PackageIndex = self.server.owner
        with index.lock:
            index.requests.append(f"{self.command} {self.path}")
            plan = next((p for p in index.plans if p.applies(self.command, self.path)), None)
        body, content_type = index.respond(self.path)
        if plan is not None:
            if self.command == "HEAD":
                self.close_connection = True  # a fault's body must not poison a kept-alive connection
            _fault(self, plan, body, content_type)
            return
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # uv asks HEAD first (range support) before fetching a wheel
            self.wfile.write(body)

    do_HEAD = do_GET


class PackageIndex(_Base):
    """A PEP 503 simple index at URL/simple/ serving in-memory wheels.

    add(name, version) publishes a wheel; `served` can replace the bytes actually sent for a file
    (a tampered mirror) while the page still lists the original hash.
    """

    handler = _IndexHandler

    def __init__(self):
        super().__init__()
        self.projects: dict[str, dict[str, bytes]] = {}
        self.served: dict[str, bytes] = {}
        self.plans: list[FaultPlan] = []
        self.requests: list[str] = []
        self.connections = 0  # TCP connections accepted
        self.list_hashes = True

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple"

    def add(self, name: str, version: str, **kwargs) -> tuple[str, bytes]:
        filename, data = make_wheel(name, version, **kwargs)
        self.projects.setdefault(name.lower().replace("_", "-"), {})[filename] = data
        return filename, data

    def add_sdist(self, name: str, version: str, files: dict[str, str]) -> tuple[str, bytes]:
        """Publish a source distribution NAME-VERSION.tar.gz holding files (plus PKG-INFO)."""
        import tarfile

        base = f"{name.replace('-', '_')}-{version}"
        files = dict(files, **{"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path, text in sorted(files.items()):
                data = text.encode()
                info = tarfile.TarInfo(f"{base}/{path}")
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
        filename = f"{base}.tar.gz"
        self.projects.setdefault(name.lower().replace("_", "-"), {})[filename] = buffer.getvalue()
        return filename, buffer.getvalue()

    def fault(self, plan: FaultPlan) -> FaultPlan:
        self.plans.append(plan)
        return plan

    def respond(self, path: str) -> tuple[bytes | None, str]:
        parts = [p for p in urlsplit(path).path.split("/") if p]
        if parts[:1] == ["simple"] and len(parts) == 2 and parts[1] in self.projects:
            links = []
            for filename, data in sorted(self.projects[parts[1]].items()):
                # The hash of what is really served: a tampered mirror is consistent with itself.
                served = self.served.get(filename, data)
                fragment = f"#sha256={hashlib.sha256(served).hexdigest()}" if self.list_hashes else ""
                links.append(f'<a href="/files/{filename}{fragment}">{filename}</a><br/>')
            html = "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
            return html.encode(), "text/html"
        if parts[:1] == ["files"] and len(parts) == 2:
            for files in self.projects.values():
                if parts[1] in files:
                    return self.served.get(parts[1], files[parts[1]]), "application/octet-stream"
        return None, "text/plain"


# --- a fault-injecting reverse proxy ---------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        proxy: FaultProxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with proxy.lock:
            proxy.requests.append(f"{self.command} {self.path}")
            plan = next((p for p in proxy.plans if p.applies(self.command, self.path)), None)
        if plan is not None and plan.kind not in (TRUNCATE, DROP_AFTER):
            _fault(self, plan)
            return
        upstream = urlsplit(proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=proxy.upstream_timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            if plan is not None and plan.kind == DROP_AFTER:
                _fault(self, FaultPlan(DROP))
                return
            if plan is not None:  # TRUNCATE: the real answer, cut in half
                _fault(self, plan, payload, response.getheader("Content-Type", "application/octet-stream"))
                return
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


class FaultProxy(_Base):
    """Forwards everything to `upstream` except the requests a FaultPlan claims."""

    handler = _ProxyHandler

    def __init__(self, upstream: str, upstream_timeout: float = 30.0):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self.plans: list[FaultPlan] = []
        self.requests: list[str] = []

    def fault(self, plan: FaultPlan) -> FaultPlan:
        self.plans.append(plan)
        return plan


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll predicate until true or timeout (bounded); returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
