"""Cross-target resolution and installation with uv.

uv resolves and installs for a *target* interpreter and platform (--python-version,
--python-platform) rather than for the host, which is what a Lambda layer needs. Every call
trusts the system CA store (--system-certs) for TLS-intercepting proxies.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.backends.indexes import IndexSettings
from layerbuild.backends.wheels.index import project_files, ships_platform_wheels
from layerbuild.errors import NeedsCompilingError, ResolveError
from layerbuild.model.runtimes import Target
from layerbuild.util.netsafe import (
    DEADLINE_ENV,
    deadline_seconds,
    host_of,
    redact_text,
    redact_url,
)

# The hint uv prints when a package has no usable wheel and builds are disabled for it.
_WHEELS_REQUIRED = re.compile(r"Wheels are required for `([^`]+)`")
_NO_WHEELS = re.compile(r"Because (?:all versions of )?([A-Za-z0-9._-]+)(?:[=<>!~]=?\S+)? has no usable wheels")
# uv's refusal of a source distribution that built into a wheel for the host, not the target.
_BUILT_FOR_HOST = re.compile(r"The built wheel `(([^`/-]+)-[^`/-]+-([^`/]+))\.whl` is not compatible with the target")
MAX_SDIST_ROUNDS = 25
# One uv run in all (resolving or installing, its downloads and any pure-Python sdist it builds):
# uv's own UV_HTTP_TIMEOUT is per read, this bounds the process. $LAYERBUILD_NET_DEADLINE overrides.
UV_DEADLINE = 1800.0


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception:
        found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if not found:
            raise ResolveError("uv is not installed: run 'pip install uv' (or 'make install')") from None
        return found


@dataclass
class UvRun:
    returncode: int
    stdout: str
    stderr: str


def uv_env() -> dict:
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # never fetch interpreters behind the user's back
    env.setdefault("UV_HTTP_TIMEOUT", "60")
    if os.environ.get(DEADLINE_ENV):  # no single read may outlast the whole run's deadline
        try:
            per_read = float(env["UV_HTTP_TIMEOUT"])
        except ValueError:
            per_read = 60.0
        env["UV_HTTP_TIMEOUT"] = str(max(1, int(min(per_read, deadline_seconds(UV_DEADLINE)))))
    env["UV_NO_PROGRESS"] = "1"
    # A build never hands AWS credentials to package build scripts.
    for key in [k for k in env if k.upper().startswith("AWS_")]:  # aws_secret_access_key too
        del env[key]
    return env


def run_uv(args: list[str], cwd: Path | None = None, timeout: float | None = None) -> UvRun:
    """uv's result, within a total deadline (UV_DEADLINE, or $LAYERBUILD_NET_DEADLINE): past it uv is killed
    and reading its pipes stops within seconds even if a child it started still holds them."""
    timeout = timeout if timeout is not None else deadline_seconds(UV_DEADLINE)
    command = [uv_binary(), *args]
    proc = subprocess.Popen(command, cwd=cwd, env=uv_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace")  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a build backend uv started keeps the pipes open: stop reading
            pass
        name = " ".join(args[:2])
        index = args[args.index("--index-url") + 1] if "--index-url" in args[:-1] else None
        where = f" from {host_of(index)}" if index else ""
        raise ResolveError(f"uv {name}: no result{where} within the {timeout:g}s deadline (set {DEADLINE_ENV} to "
                           "allow more)") from None  # fmt: skip
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
    return UvRun(proc.returncode, stdout, stderr)


def target_args(target: Target) -> list[str]:
    return [
        "--python-version", target.python,
        "--python-platform", target.runtime.uv_platform(target.arch),
        "--python", sys.executable,  # builds pure-Python sdists with the host interpreter
        "--system-certs",
        "--no-config",
    ]  # fmt: skip


def _first_error_line(stderr: str) -> str:
    """uv's error and its cause on one line (the cause names the package)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith("warning:")]
    error = next((ln for ln in lines if ln.startswith(("error:", "×"))), None)
    after = lines[lines.index(error):] if error else lines  # a warning's own causes come before the error
    causes = [ln for ln in after if ln.startswith(("cause:", "╰─▶", "Caused by:")) or ln.startswith("Because")]
    # The first cause names what failed (the URL, the package); the last one says why (refused, 500, timeout).
    chosen = [error, *(causes[:1] + causes[-1:] if len(causes) > 1 else causes)]
    parts = [p.lstrip("×╰─▶ ").removeprefix("error: ").removeprefix("cause: ").removeprefix("Caused by: ")
             for p in chosen if p]  # fmt: skip
    if parts:
        return redact_text(": ".join(parts))
    return redact_text(lines[-1]) if lines else "uv failed without a message"


# uv's words for a full disk, and the file it was writing ("failed to write to file `PATH`: No space left...").
_DISK_FULL = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}
_WRITING = re.compile(r"(?:write to|create|copy to|persist)[^`]*`([^`]+)`")


def raise_if_disk_full(stderr: str) -> None:
    """A disk that filled up under uv is the machine's problem, reported as an OSError like any other
    (the build then names where it writes), not as a resolution error."""
    for words, number in _DISK_FULL.items():
        if words in stderr:
            found = _WRITING.search(stderr)
            raise OSError(number, words, found.group(1) if found else None)


@dataclass
class LockResult:
    text: str
    sdist_packages: list[str] = field(default_factory=list)


def needs_compiling_message(package: str, target: Target, detail: str = "") -> str:
    glibc = "%d.%d" % target.runtime.glibc
    return (
        f"{package} has no wheel for {target.runtime.name} {target.arch} (glibc {glibc}) and is not pure Python, "
        f"so it needs compiling{': ' + detail if detail else ''}; use --backend docker, "
        f"or pin a version of {package} that ships manylinux wheels for this target"
    )


def compile_lock(requirements: list[str], target: Target, index: IndexSettings, work_dir: Path,
                 extra_args: list[str] | None = None) -> LockResult:  # fmt: skip
    """Resolve requirements for the target into pinned lines with hashes (pip-tools format).

    Wheels only, so that the newest version *with a compatible wheel* wins; a project that ships
    no wheel at all is allowed as a source distribution when it is pure Python.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    req_in = work_dir / "requirements.in"
    req_in.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    out = work_dir / "requirements.lock"
    sdists: list[str] = []
    for _ in range(MAX_SDIST_ROUNDS):
        args = ["pip", "compile", "--quiet", "--generate-hashes", "--no-header", "--no-annotate",
                "--only-binary", ":all:", *[a for s in sdists for a in ("--no-binary", s)],
                *target_args(target), *index.args(), *(extra_args or []),
                str(req_in), "-o", str(out)]  # fmt: skip
        result = run_uv(args, cwd=work_dir)
        if result.returncode == 0:
            return LockResult(out.read_text(encoding="utf-8"), sdists)
        raise_if_disk_full(result.stderr)
        missing = _WHEELS_REQUIRED.search(result.stderr) or _NO_WHEELS.search(result.stderr)
        if not missing or missing.group(1).lower() in (s.lower() for s in sdists):
            raise ResolveError(f"cannot resolve for {target}: {_first_error_line(result.stderr)}")
        package = missing.group(1)
        files = project_files(package, index.index_url)
        if files is not None and ships_platform_wheels(files):
            raise NeedsCompilingError(needs_compiling_message(package, target), package)
        sdists.append(package)
    raise ResolveError(f"cannot resolve for {target}: more than {MAX_SDIST_ROUNDS} packages have no wheels")


def install_lock(lock_path: Path, target: Target, index: IndexSettings, dest: Path, sdist_packages: list[str]) -> None:
    """Install exactly the locked pins into dest, verifying every hash."""
    args = ["pip", "install", "--quiet", "--require-hashes", "--no-deps", "--target", str(dest),
            "--only-binary", ":all:", *[a for s in sdist_packages for a in ("--no-binary", s)],
            "--link-mode", "copy", "--no-compile",
            *target_args(target), *index.args(), "-r", str(lock_path)]  # fmt: skip
    result = run_uv(args, cwd=lock_path.parent)
    if result.returncode != 0:
        raise_if_disk_full(result.stderr)
        message = _first_error_line(result.stderr)
        missing = _WHEELS_REQUIRED.search(result.stderr) or _NO_WHEELS.search(result.stderr)
        if missing:
            raise NeedsCompilingError(needs_compiling_message(missing.group(1), target), missing.group(1))
        host_built = _BUILT_FOR_HOST.search(result.stderr)
        if host_built:  # a "pure Python" source distribution that compiled something after all
            package, tags = host_built.group(2), host_built.group(3)
            raise NeedsCompilingError(needs_compiling_message(package, target, f"its source built into {tags}"), package)
        hash_problem = re.search(r"Hash mismatch for `([^`]+)`", result.stderr)
        if hash_problem:
            # lock_path is a scratch copy: name the package and where the bytes came from instead.
            raise ResolveError(
                f"hash mismatch for {hash_problem.group(1)}: the file downloaded from {redact_url(index.index_url)} does not match "
                f"the hash in the lock (changed or tampered upstream; re-lock only if you trust the new file)"
            )
        raise ResolveError(f"cannot install for {target}: {message}")
