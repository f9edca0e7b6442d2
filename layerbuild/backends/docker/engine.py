"""Talking to a Docker engine through the Docker SDK for Python: the docker backend's side effects.

Everything here is a thin, bounded wrapper: connect (one-line error when no engine answers), make
sure an image is present (pull it once), run a container to completion with a time limit and
collect its output, commit a container into a tagged image, and make the pip cache volume.
Nothing here knows about recipes or pip; backends/docker.py decides what to run.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from layerbuild.errors import (
    BuildError,
    BuildImageError,
    DockerUnavailableError,
    EmulationError,
)
from layerbuild.util.process import pid_alive

DEFAULT_ADDRESS = "unix:///var/run/docker.sock"
# Seconds for one API call (not for a whole container run, which has its own limit).
API_TIMEOUT = 120
DEFAULT_RUN_TIMEOUT = 3600
# How to get emulation for foreign-architecture containers, for the error message.
EMULATION_HINT = (
    "install emulation: 'docker run --privileged --rm tonistiigi/binfmt --install {arch}' "
    "or, on Debian/Ubuntu, 'apt-get install qemu-user-static binfmt-support' (Docker Desktop has it built in)"
)


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Mount:
    source: str  # a host path (bind) or a volume name
    target: str
    read_only: bool = False
    volume: bool = False


@dataclass
class RunSpec:
    image: str
    command: list[str]
    platform: str
    user: str = ""  # "uid:gid"; empty: the image's user (root)
    environment: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    working_dir: str | None = None
    timeout: float = DEFAULT_RUN_TIMEOUT


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved as the container wrote them


@dataclass(frozen=True)
class ImageInfo:
    reference: str
    id: str
    platform: str  # linux/amd64
    labels: dict


def _is_exec_format_error(text: str) -> bool:
    return "exec format error" in text.lower()


# Every container layerbuild creates names its owner (host:pid). A build killed outright (SIGKILL,
# OOM) cannot remove its container, which may even keep running; the next build on the same host
# removes containers whose owner process is gone.
OWNER_LABEL = "layerbuild.owner"


# Committed images would inherit the owner label (and pass it to every container made from them).
NO_OWNER = f'LABEL {OWNER_LABEL}=""'


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def orphaned(owner: str, hostname: str) -> bool:
    """A container label's owner is this host's and that process no longer exists."""
    host, _, pid = owner.rpartition(":")
    return host == hostname and pid.isdigit() and not pid_alive(int(pid))


class Engine:
    """A connected Docker engine."""

    def __init__(self, client, address: str):
        self.client = client
        self.address = address

    @classmethod
    def connect(cls) -> "Engine":
        import docker  # late: the SDK pulls in requests/urllib3 and only docker builds need it

        address = engine_address()
        try:
            client = docker.from_env(timeout=API_TIMEOUT)
            client.ping()
        except Exception as exc:  # DockerException, requests' ConnectionError, a bad DOCKER_HOST...
            raise DockerUnavailableError(
                f"cannot reach a Docker engine at {address} ({_short(exc, 160)}): start Docker "
                "(e.g. 'sudo systemctl start docker' or Docker Desktop), or point DOCKER_HOST at a running engine"
            ) from None
        engine = cls(client, address)
        engine.remove_orphans()
        return engine

    def remove_orphans(self) -> list[str]:
        """Remove containers left by killed layerbuild processes of this host; returns their ids."""
        import docker

        hostname, removed = socket.gethostname(), []
        try:
            containers = self.client.containers.list(all=True, filters={"label": OWNER_LABEL})
        except docker.errors.DockerException:
            return removed  # housekeeping never fails a build
        for container in containers:
            if orphaned(container.labels.get(OWNER_LABEL, ""), hostname):
                try:
                    container.remove(force=True)
                    removed.append(container.id)
                except docker.errors.DockerException:
                    pass  # removed meanwhile by another build's sweep
        return removed

    def native_machine(self) -> str:
        """The engine's own machine name: x86_64 or aarch64."""
        return str(self.client.info().get("Architecture", ""))

    def _image_info(self, reference: str, image) -> ImageInfo:
        attrs = image.attrs
        platform = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', '')}"
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return ImageInfo(reference, image.id, platform, dict(labels))

    def local_image(self, reference: str) -> ImageInfo | None:
        import docker

        try:
            return self._image_info(reference, self.client.images.get(reference))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise BuildImageError(f"cannot inspect image {reference!r} on {self.address}: {_short(exc.explanation or exc)}") from None

    def ensure_image(self, reference: str, platform: str) -> ImageInfo:
        """The image, pulled for the platform when it is not on the engine yet."""
        import docker

        found = self.local_image(reference)
        if found is not None:
            return found
        try:
            image = self.client.images.pull(reference, platform=platform)
        except (docker.errors.APIError, docker.errors.DockerException) as exc:
            reason = getattr(exc, "explanation", None) or exc
            raise BuildImageError(
                f"build image {reference!r} is not on the Docker engine and could not be pulled for {platform} "
                f"({_short(reason, 200)}): pull or build it ('docker pull --platform {platform} {reference}'), "
                "or choose another image with --image or LAYERBUILD_BUILD_IMAGE"
            ) from None
        return self._image_info(reference, image)

    def ensure_volume(self, name: str) -> bool:
        """Create the named volume if missing; True when it was created now."""
        import docker

        try:
            self.client.volumes.get(name)
            return False
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels={"layerbuild": "pip-cache"})
            return True

    def run(self, spec: RunSpec, commit_as: tuple[str, str, list[str]] | None = None) -> RunResult:
        """Run a container to completion (bounded by spec.timeout) and remove it.

        commit_as=(repository, tag, changes): on exit status 0, commit the container into that image.
        """
        import docker
        import requests
        from docker.types import Mount as SdkMount

        # no_copy: an empty volume must not take the image's mount-point ownership (root, 0755) instead of ours.
        mounts = [
            SdkMount(m.target, m.source, type="volume", read_only=m.read_only, no_copy=True) if m.volume
            else SdkMount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        container = None
        try:
            try:
                container = self.client.containers.create(
                    spec.image, spec.command, user=spec.user or None, environment=spec.environment,
                    mounts=mounts, working_dir=spec.working_dir, platform=spec.platform, network_mode="bridge",
                    labels={OWNER_LABEL: owner_label()},
                )  # fmt: skip
                container.start()
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc)
                if _is_exec_format_error(text):
                    raise self.emulation_error(spec.platform) from None
                raise BuildError(f"cannot start a container from {spec.image!r} on {self.address}: {_short(text)}") from None
            try:
                status = container.wait(timeout=spec.timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.kill()
                raise BuildError(
                    f"the build container ({spec.image}) did not finish within {spec.timeout:.0f}s and was stopped; "
                    "raise LAYERBUILD_DOCKER_TIMEOUT if the build is just slow"
                ) from None
            output = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
            exit_code = int(status.get("StatusCode", 1))
            if exit_code != 0 and _is_exec_format_error(output):
                raise self.emulation_error(spec.platform)
            if exit_code == 0 and commit_as:
                repository, tag, changes = commit_as
                container.commit(repository=repository, tag=tag, changes=[*changes, NO_OWNER])
            return RunResult(exit_code, output)
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.DockerException:
                    pass  # already gone; nothing else holds it

    def relabel(self, source: str, repository: str, tag: str, labels: dict[str, str], platform: str) -> ImageInfo:
        """Tag `source` as repository:tag with labels added (a created, never started container committed)."""
        import docker

        changes = ["LABEL " + " ".join(f'{k}="{v}"' for k, v in sorted(labels.items())), NO_OWNER]
        container = self.client.containers.create(source, ["true"], platform=platform, labels={OWNER_LABEL: owner_label()})
        try:
            container.commit(repository=repository, tag=tag, changes=changes)
        finally:
            container.remove(force=True)
        try:
            self.client.images.remove(source)  # only the scratch tag: the labelled image keeps the layers
        except docker.errors.APIError:
            pass
        found = self.local_image(f"{repository}:{tag}")
        if found is None:
            raise BuildError(f"the derived build image {repository}:{tag} was committed but is not on {self.address}")
        return found

    def emulation_error(self, platform: str) -> EmulationError:
        arch = platform.split("/")[-1]
        native = self.native_machine() or "this"
        return EmulationError(
            f"the Docker engine at {self.address} cannot run {platform} containers on its {native} machine: "
            f"no emulation for {arch} is installed; " + EMULATION_HINT.format(arch=arch)
        )
