"""The environment a locally invoked handler gets: Lambda's own variables, the user's (--env, --env-file in
the shape of SAM's --env-vars), the AWS credentials of the standard chain (as `sam local invoke` passes
them) and the endpoint and proxy settings of this shell. Nothing here prints a value."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.util import safetext

# Set by Lambda itself; a function's configuration cannot set them ("Defined runtime environment variables").
RESERVED = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
})  # fmt: skip
# Taken from this shell so that a handler reaches a local emulator or goes through the same proxy.
PASSED_THROUGH = ("AWS_ENDPOINT_URL", "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                  "https_proxy", "no_proxy")  # fmt: skip
PASSED_PREFIX = "AWS_ENDPOINT_URL_"  # AWS_ENDPOINT_URL_SECRETS_MANAGER and the like
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_FILE = 1 << 20


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None
    source: str  # how botocore found them: env, shared-credentials-file, sso, assume-role, ...

    def environment(self) -> dict[str, str]:
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if self.token:
            env["AWS_SESSION_TOKEN"] = self.token
        return env

    def __repr__(self) -> str:  # never shows the secret, even in a debug traceback
        return f"Credentials(source={self.source!r})"


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name):
        raise LayerbuildError(f"{where}: {name!r} is not a valid environment variable name (letters, digits, _; "
                              f"not starting with a digit)")  # fmt: skip
    if name in RESERVED:
        raise LayerbuildError(f"{where}: {name} is set by Lambda itself and cannot be set by a function "
                              f"(use --region, --function-name, --memory or the credential options)")  # fmt: skip


def parse_env_options(items) -> dict[str, str]:
    """--env KEY=VALUE (repeatable; the value may contain '=' and be empty)."""
    env: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise LayerbuildError(f"--env {name}: expected KEY=VALUE")
        _check_name(name, f"--env {name}")
        env[name] = value
    return env


def read_env_file(path: Path, function_name: str) -> tuple[dict[str, str], list[str]]:
    """SAM's --env-vars shape: {"Parameters": {...}} for every function, {"FunctionName": {...}} for one (wins).
    Returns the variables and notes (a file that names other functions but not this one)."""
    label = f"--env-file {path}"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_ENV_FILE + 1)
    except FileNotFoundError:
        raise LayerbuildError(f"{label}: no such file") from None
    except OSError as exc:
        raise LayerbuildError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_ENV_FILE:
        raise LayerbuildError(f"{label}: larger than {MAX_ENV_FILE:,} bytes; an environment file is small JSON")
    try:
        data = safetext.loads(raw)
    except safetext.JsonInputError as exc:
        raise LayerbuildError(f"{label}: {str(exc).splitlines()[0][:160]}; expected "
                              f'{{"Parameters": {{"KEY": "VALUE"}}}} or {{"{function_name}": {{"KEY": "VALUE"}}}}') from None  # fmt: skip
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise LayerbuildError(f'{label}: expected an object of objects, {{"Parameters": {{"KEY": "VALUE"}}}} or '
                              f'{{"{function_name}": {{"KEY": "VALUE"}}}} (the shape of sam local invoke --env-vars)')  # fmt: skip
    env: dict[str, str] = {}
    for section in ("Parameters", function_name):
        for name, value in data.get(section, {}).items():
            where = f"{label}: {section}.{name}"
            _check_name(str(name), where)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise LayerbuildError(f"{where}: values are strings (or numbers), not {type(value).__name__}")
            env[str(name)] = str(value)
    others = sorted(k for k in data if k not in ("Parameters", function_name))
    notes = []
    if others and function_name not in data:
        notes.append(f"{label} has variables for {', '.join(others)} but not for {function_name!r} (pass --function-name "
                     f"{others[0]} to use them)")  # fmt: skip
    return env, notes


def passed_through(environ=os.environ) -> dict[str, str]:
    """Endpoint, CA bundle and proxy settings of this shell, for a handler that talks to a local emulator."""
    return {k: v for k, v in environ.items() if k in PASSED_THROUGH or k.startswith(PASSED_PREFIX)}


def resolve_credentials(profile: str | None) -> tuple[Credentials | None, str | None]:
    """(credentials of the standard chain, the region it names), as boto3 would find them: environment,
    --profile or AWS_PROFILE, the shared files, SSO, assumed roles, container and instance metadata."""
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=profile)
        found = session.get_credentials()
        region = session.get_config_variable("region")
        frozen = found.get_frozen_credentials() if found is not None else None
    except botocore.exceptions.ProfileNotFound:
        known = ", ".join(sorted(botocore.session.Session().available_profiles)) or "none"
        raise LayerbuildError(f"--profile {profile}: no such profile in the AWS config or credentials files "
                              f"(profiles there: {known})") from None  # fmt: skip
    except botocore.exceptions.BotoCoreError as exc:  # an expired SSO token, a bad role ARN...
        raise LayerbuildError(f"cannot get AWS credentials{f' for --profile {profile}' if profile else ''}: "
                              f"{str(exc).splitlines()[0][:200]}") from None  # fmt: skip
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        return None, region
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None, getattr(found, "method", "") or "?"), region
