"""The system trust store: where the CA bundle lives, for TLS-intercepting proxies.

Corporate proxies re-sign TLS with a CA that only the system store knows. pip and requests honour
it through environment variables; uv needs --system-certs; build containers need the bundle
mounted and named.
"""

from __future__ import annotations

import os
from pathlib import Path

# Where distributions keep the bundle (Debian/Ubuntu, RHEL/Amazon Linux, openSUSE, Alpine, macOS brew).
_KNOWN_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
)
_ENV_NAMES = ("LAYERBUILD_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE")


def system_ca_bundle() -> Path | None:
    """The CA bundle to trust: an explicit setting first, then the OS's own file."""
    for name in _ENV_NAMES:
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    for candidate in _KNOWN_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def requests_verify() -> str | bool:
    """The `verify=` argument for requests: the system bundle when there is one."""
    bundle = system_ca_bundle()
    return str(bundle) if bundle else True
