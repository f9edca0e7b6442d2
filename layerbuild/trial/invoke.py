"""`layerbuild invoke`: run a handler locally with layers stacked as Lambda stacks them.

The layers are extracted (vetted by safezip) in order into one private read-only /opt-like
directory - a later layer's file wins - and the handler runs in a fresh child interpreter
(-I -S: nothing of the host's site-packages) with Lambda's sys.path order, a context object with
Lambda's attribute names, and Lambda's timeout semantics: after init, the handler has --timeout
seconds; then the child is killed and the result is "Task timed out after N.NN seconds".
"""

from __future__ import annotations

import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.audit.facts import manifest_beside
from layerbuild.errors import LayerbuildError
from layerbuild.model.runtimes import check_architecture, get_runtime, make_target
from layerbuild.trial import _invoke_runner, invokeenv
from layerbuild.util import safetext
from layerbuild.verify import runtimesdk
from layerbuild.verify import venues as verify
from layerbuild.verify.optdir import layers_extracted, read_only_command
from layerbuild.verify.venues import CannotTestError

RUNNER_SOURCE = Path(_invoke_runner.__file__).read_text(encoding="utf-8")
DEFAULT_TIMEOUT = 3.0  # Lambda's default
MAX_TIMEOUT = 900.0
INIT_TIMEOUT = 10.0  # Lambda's init phase limit
MEMORY_RANGE = (128, 10240)
MAX_EVENT_BYTES = 6 * 1024 * 1024  # Lambda's limit for a synchronous invocation's payload
ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class InvokeSpec:
    handler: str  # module.function (module may be a path: dir/file.function)
    layers: tuple[Path, ...]
    event_path: Path
    code_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    function_name: str = "layerbuild-local"
    memory_mb: int = 128
    python: str | None = None
    region: str | None = None  # default: the region of the AWS configuration, else us-east-1
    init_timeout: float = INIT_TIMEOUT
    env: tuple[str, ...] = ()  # --env KEY=VALUE
    env_file: Path | None = None  # SAM's --env-vars shape
    credentials: bool = True  # the standard chain's credentials handed to the handler (--no-credentials: none)
    profile: str | None = None
    runtime_packages: bool = True  # the runtime's own boto3 ... after the layers


@dataclass
class InvokeResult:
    ok: bool
    payload: object  # the handler's return value, or Lambda's error object
    request_id: str
    logs: str = ""
    python: str = ""
    notes: list[str] = field(default_factory=list)
    where: str = ""


# ---- pure parts -------------------------------------------------------------------------------


def split_handler(handler: str) -> tuple[str, str]:
    """'pkg/mod.fn' or 'pkg.mod.fn' -> ('pkg.mod', 'fn'), with a one-line error otherwise."""
    module, dot, function = handler.rpartition(".")
    module = module.replace("/", ".")
    if not dot or not module or not all(p.isidentifier() for p in module.split(".")) or not function.isidentifier():
        raise LayerbuildError(f"HANDLER {handler!r}: expected MODULE.FUNCTION, e.g. 'app.handler' or 'src/app.handler'")
    return module, function


def check_limits(timeout: float, memory_mb: int) -> None:
    if not 0 < timeout <= MAX_TIMEOUT:
        raise LayerbuildError(f"--timeout {timeout:g}: Lambda timeouts are more than 0 and at most {MAX_TIMEOUT:g} seconds")
    if not MEMORY_RANGE[0] <= memory_mb <= MEMORY_RANGE[1]:
        raise LayerbuildError(f"--memory {memory_mb}: Lambda memory is {MEMORY_RANGE[0]} to {MEMORY_RANGE[1]} MB")


def read_event(path: Path) -> object:
    """The event, as Lambda would take it: JSON of at most MAX_EVENT_BYTES, nested at most MAX_JSON_DEPTH deep."""
    try:
        return safetext.read_json(Path(path), max_bytes=MAX_EVENT_BYTES)
    except FileNotFoundError:
        raise LayerbuildError(f"--event {path}: no such file (write one with 'layerbuild event s3-put ... > event.json')") from None
    except OSError as exc:
        raise LayerbuildError(f"--event {path}: cannot read: {exc.strerror or exc}") from None
    except safetext.JsonInputError as exc:
        raise LayerbuildError(f"--event {path}: {exc}") from None


def timed_out_payload(timeout: float) -> dict:
    return {"errorMessage": f"Task timed out after {timeout:.2f} seconds", "errorType": "Sandbox.Timedout"}


def target_python(spec: InvokeSpec) -> tuple[str, str]:
    """(python, arch) of the run: --python, else the first layer's manifest, else this interpreter's; every
    layer with a manifest must be built for them (Lambda refuses a layer of another runtime or architecture)."""
    manifests = [(layer, manifest_beside(layer)) for layer in spec.layers]
    first = manifests[0][1] if manifests else None
    python = get_runtime(spec.python).python if spec.python else (first.python if first else "%d.%d" % sys.version_info[:2])
    arch = first.architecture if first else check_architecture(platform.machine())
    for layer, manifest in manifests:
        if manifest is not None and (manifest.python, manifest.architecture) != (python, arch):
            why = "--python" if spec.python else f"the first layer, {spec.layers[0]}"
            raise LayerbuildError(f"--layer {layer} is built for python{manifest.python} {manifest.architecture}, but this run "
                                  f"is python{python} {arch} (from {why}); use layers of one runtime and architecture")  # fmt: skip
    return python, arch


def handler_environment(spec: InvokeSpec, python: str, root: Path, code_dir: Path, work: Path,
                        log_stream: str) -> tuple[dict, list[str]]:  # fmt: skip
    """Lambda's variables, this shell's endpoint and proxy settings, the credentials, then the user's."""
    notes: list[str] = []
    user: dict[str, str] = {}
    if spec.env_file is not None:
        user, notes = invokeenv.read_env_file(Path(spec.env_file), spec.function_name)
    user.update(invokeenv.parse_env_options(spec.env))
    credentials, configured_region = invokeenv.resolve_credentials(spec.profile) if spec.credentials else (None, None)
    region = spec.region or configured_region or DEFAULT_REGION
    env = {
        "PATH": f"{root}/bin:/usr/local/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": f"{root}/lib", "LANG": "C.UTF-8",
        "TZ": ":UTC", "HOME": str(work), "LAMBDA_TASK_ROOT": str(code_dir), "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region, "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}", "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{python}", "TMPDIR": str(work / "tmp"),
    }  # fmt: skip
    env.update(invokeenv.passed_through())
    if credentials is not None:
        env.update(credentials.environment())
        notes.append(f"AWS credentials from {credentials.source} handed to the handler (--no-credentials: none)")
    elif spec.credentials:
        notes.append("no AWS credentials found in the standard chain (environment, --profile, config files, SSO): "
                     "the handler runs without any")  # fmt: skip
    env.update(user)
    return env, notes


# ---- running --------------------------------------------------------------------------------


def invoke(spec: InvokeSpec) -> InvokeResult:
    module, function = split_handler(spec.handler)
    check_limits(spec.timeout, spec.memory_mb)
    read_event(spec.event_path)  # a bad event file is the user's error, reported before anything runs
    code_dir = Path(spec.code_dir).resolve()
    if not code_dir.is_dir():
        raise LayerbuildError(f"--code {spec.code_dir}: no such directory")
    python, arch = target_python(spec)
    target = make_target(python, arch)
    venue, why = verify.find_venue(target, ("local", "qemu"))
    if venue is None:
        raise CannotTestError(f"cannot invoke for python{python} on {arch}: {', and '.join(why.values())}")
    request_id = str(uuid.uuid4())
    log_stream = time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + uuid.uuid4().hex
    notes: list[str] = []
    after: list[str] = []
    if spec.runtime_packages:
        try:
            after.append(str(runtimesdk.ensure(target.runtime)))
        except runtimesdk.RuntimeSdkError as exc:
            notes.append(f"the runtime's own packages (boto3 ...) are not available, the handler runs without them: {exc.message}")
    with layers_extracted(spec.layers, prefix="layerbuild-invoke-") as root:
        work = root.parent  # private (mkdtemp), writable; only root/ is read-only
        (work / "tmp").mkdir()  # the handler's own writable /tmp (TMPDIR), gone with the run
        env, env_notes = handler_environment(spec, python, root, code_dir, work, log_stream)
        notes += env_notes
        config_path, result_path = work / "config.json", work / "result.json"
        read_fd, write_fd = os.pipe()
        config = {
            "module": module, "function": function, "code_dir": str(code_dir), "root": str(root), "after": after,
            "event_path": str(Path(spec.event_path).resolve()), "result_path": str(result_path), "ready_fd": write_fd,
            "timeout": spec.timeout, "function_name": spec.function_name, "memory_limit_in_mb": spec.memory_mb,
            "aws_request_id": request_id,
            "invoked_function_arn": f"arn:aws:lambda:{env['AWS_REGION']}:{ACCOUNT}:function:{spec.function_name}",
            "log_stream_name": log_stream,
        }  # fmt: skip
        config_path.write_text(json.dumps(config), encoding="utf-8")
        argv = read_only_command(root, [*venue.command, "-I", "-S", "-B", "-c", RUNNER_SOURCE, str(config_path)])
        log_file = tempfile.TemporaryFile(dir=work)
        adopted = Adopted()  # what the handler detaches from its group (setsid, double forks) comes back to us
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                     cwd=code_dir, pass_fds=(write_fd,), start_new_session=True)  # fmt: skip
        finally:
            os.close(write_fd)
        try:
            outcome = _supervise(child, read_fd, spec.timeout, spec.init_timeout)
        finally:
            os.close(read_fd)
            _kill(child)
            adopted.end()
        log_file.seek(0)
        logs = log_file.read().decode("utf-8", errors="replace")
        log_file.close()
        done = lambda ok, payload: InvokeResult(ok, payload, request_id, logs, python, notes, venue.where)  # noqa: E731
        if outcome == "init-timeout":
            return done(False, {"errorMessage": f"Init phase did not finish within {spec.init_timeout:.2f} seconds",
                                "errorType": "Runtime.InitTimeout"})  # fmt: skip
        if outcome == "timeout":
            logs += f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {request_id} Task timed out after {spec.timeout:.2f} seconds\n"
            return done(False, timed_out_payload(spec.timeout))
        try:
            result = safetext.read_json(result_path, max_bytes=64 << 20)
            if not isinstance(result, dict):
                raise ValueError("not an object")
        except (OSError, ValueError, RecursionError):  # RecursionError: a value nested deeper than we can read back
            return done(False, {"errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status "
                                                f"{child.returncode}", "errorType": "Runtime.ExitError"})  # fmt: skip
    return done(bool(result.get("ok")), result.get("value") if result.get("ok") else result.get("error"))


def _supervise(child: subprocess.Popen, ready_fd: int, timeout: float, init_timeout: float) -> str:
    """'done' when the child exits in time; 'timeout' / 'init-timeout' when it had to be stopped."""
    init_deadline = time.monotonic() + init_timeout
    while True:  # bounded: init_deadline
        remaining = init_deadline - time.monotonic()
        if remaining <= 0:
            return "init-timeout"
        readable, _, _ = select.select([ready_fd], [], [], min(remaining, 0.5))
        if readable:
            if os.read(ready_fd, 1) == b"R":
                break
            child.wait(timeout=init_timeout)  # EOF without the signal: the child ended during init
            return "done"
        if child.poll() is not None:
            return "done"
    try:
        child.wait(timeout=timeout)
        return "done"
    except subprocess.TimeoutExpired:
        return "timeout"


def _kill(child: subprocess.Popen) -> None:
    """End the run's whole process group, as Lambda ends the sandbox: the handler's children too, even when the
    handler itself has returned (the group's id stays reserved while any of its processes lives)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left of the group
        pass
    child.wait(timeout=10)


_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


class Adopted:
    """While a handler runs, this process is a child subreaper (Linux): a process the handler detaches from
    its process group (setsid, a double fork) is re-parented here instead of to init when its parent ends,
    so end() finds it and ends it with the rest, as Lambda ends the whole sandbox. Processes that were
    this process's children before (a test's servers, say) are left alone. Elsewhere: the group kill only."""

    def __init__(self) -> None:
        self.before = _children_of(os.getpid())
        self.on = _subreaper(True)

    def end(self) -> None:
        if not self.on:
            return
        try:
            for _ in range(20):  # each round ends what the previous one's kills re-parented here
                orphans = _children_of(os.getpid()) - self.before
                if not orphans:
                    break
                for pid in orphans:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    except (ProcessLookupError, ChildProcessError, PermissionError):
                        pass
        finally:
            _subreaper(False)


def _subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_of(parent: int) -> set[int]:
    """Pids whose parent is `parent`, from /proc (empty where there is none)."""
    found = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(parent):
            found.add(int(name))
    return found
