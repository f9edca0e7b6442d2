"""The import test's Docker side: run the import runner inside the Lambda runtime image.

The layer directory is bind-mounted read-only at /opt, as Lambda mounts layers. The image's own
entrypoint (/lambda-entrypoint.sh, the runtime interface emulator) is replaced by a shell that
finds the image's python (/var/lang/bin/python3 in Lambda images, /usr/bin/python3 in stand-ins).
"""

from __future__ import annotations

from pathlib import Path

from layerbuild.backends.docker.engine import DockerUnavailableError, Engine
from layerbuild.errors import BuildImageError, LayerbuildError
from layerbuild.model.runtimes import DOCKER_PLATFORM, Target

# Lambda's LD_LIBRARY_PATH in the python3.12 image (reference/lambda.md), /opt/lib last.
LAMBDA_LD_LIBRARY_PATH = "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
# Not exec: as PID 1, python would be immune to signals it has no handler for (a crash would not end it).
_FIND_PYTHON = (
    'for p in /var/lang/bin/python3 /usr/local/bin/python3 /usr/bin/python3; do '
    'if [ -x "$p" ]; then "$p" "$@"; exit $?; fi; done; echo "no python3 in this image" >&2; exit 127'
)


def connect(required: bool) -> tuple[Engine | None, str | None]:
    """(engine, None) when an engine answers; (None, why) otherwise, or raise when Docker is required."""
    try:
        return Engine.connect(), None
    except DockerUnavailableError as exc:
        if required:
            raise
        return None, str(exc)


def image_ready(engine: Engine, reference: str, target: Target, required: bool, pull: bool = True) -> str | None:
    """None when the image is on the engine (pulled now if need be and allowed); else why not (or raise when required)."""
    import docker

    platform = DOCKER_PLATFORM[target.arch]
    found = engine.local_image(reference)
    if found is not None:
        if found.platform == platform:
            return None
        why = f"runtime image {reference!r} is {found.platform}, not {platform} as {target.slug} needs"
        if required:
            from layerbuild.verify.venues import CannotTestError

            raise CannotTestError(f"cannot test for {target.slug}: {why}; choose an image for {platform} with --image")
        return why
    if not pull:
        return f"runtime image {reference!r} is not on the Docker engine ('docker pull {reference}' to use it)"
    try:
        engine.client.images.pull(reference, platform=platform)
        return None
    except docker.errors.DockerException as exc:
        reason = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
    why = f"runtime image {reference!r} is not on the Docker engine and could not be pulled for {platform} ({reason})"
    if required:
        raise BuildImageError(f"{why}; pull or build it, or choose another with --image or LAYERBUILD_RUNTIME_IMAGE")
    return why


def run_imports(reference: str, target: Target, root: Path, runner_source: str, modules: list[str], after: list[str],
                timeout: float) -> dict:  # fmt: skip
    """The import runner in the image, the layer at /opt read-only; after: the image's own package folders."""
    import docker
    import requests
    from docker.types import Mount

    from layerbuild.verify.venues import parse_runner_output, runner_config

    engine = Engine.connect()
    where = f"docker {reference}"
    container = None
    try:
        try:
            container = engine.client.containers.create(
                reference,
                ["-I", "-S", "-B", "-c", runner_source, runner_config("/opt", modules, after)],
                entrypoint=["/bin/sh", "-c", _FIND_PYTHON, "sh"],
                environment={"LD_LIBRARY_PATH": LAMBDA_LD_LIBRARY_PATH, "PATH": LAMBDA_PATH, "LANG": "C.UTF-8", "TZ": ":UTC"},
                mounts=[Mount("/opt", str(root), type="bind", read_only=True)],
                platform=DOCKER_PLATFORM[target.arch], network_mode="none", working_dir="/tmp", user="",
            )  # fmt: skip
            container.start()
        except docker.errors.APIError as exc:
            raise LayerbuildError(f"cannot start the runtime image {reference!r}: {' '.join(str(exc.explanation or exc).split())}") from None
        try:
            status = container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            raise LayerbuildError(f"importing {', '.join(modules)} in {reference} did not finish within {timeout:g}s and was stopped") from None
        output = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
        if "exec format error" in output.lower():
            raise engine.emulation_error(DOCKER_PLATFORM[target.arch])
        code = int(status.get("StatusCode", 1))
        return parse_runner_output(output, where, 128 - code if code > 128 else code)  # 128+N: killed by signal N
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
