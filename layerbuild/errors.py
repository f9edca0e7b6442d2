"""Exception types whose messages are shown to users as-is (one line, no traceback).

Every module raises a subclass of LayerbuildError for anything a user can fix; the CLI catches
them once, prints ``error: <message>`` and exits 1.
"""


class LayerbuildError(Exception):
    """Base class: the message is a complete, user-facing sentence."""

    exit_code = 1

    def __init__(self, message: str):
        # Messages must stay on one line whatever the cause text contained.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class RecipeError(LayerbuildError):
    """A recipe file is missing, unreadable or invalid."""


class TargetError(LayerbuildError):
    """An unknown Python version or architecture was asked for."""


class ResolveError(LayerbuildError):
    """Requirements could not be resolved or installed for a target."""


class NeedsCompilingError(ResolveError):
    """A requirement has no compatible wheel and is not pure Python: it needs compiling."""

    def __init__(self, message: str, package: str):
        super().__init__(message)
        self.package = package


class BuildError(LayerbuildError):
    """A build step failed."""


class LockError(LayerbuildError):
    """A lock file is missing, stale or does not verify."""


class DockerError(BuildError):
    """The docker backend could not do its part (engine, image, emulation, system packages)."""


class DockerUnavailableError(DockerError):
    """No Docker engine answers at DOCKER_HOST (or the default socket)."""


class BuildImageError(DockerError):
    """The build image is missing and not pullable, or does not fit the target."""


class EmulationError(DockerError):
    """The engine cannot run containers for the target architecture (no binfmt/qemu emulation)."""


class SystemPackageError(DockerError):
    """The image's package manager could not install the recipe's system_packages."""


class CompileError(BuildError):
    """A requirement failed to compile in the build image; the log file holds the compiler output."""

    def __init__(self, message: str, package: str, log_path):
        super().__init__(message)
        self.package = package
        self.log_path = log_path


class KlayersError(LayerbuildError):
    """The Klayers API could not answer (HTTP status, network, malformed response, nothing cached offline)."""


class AuditError(BuildError):
    """A built layer failed the audit (it would not load on its target runtime)."""


class KlayersNotFound(KlayersError):
    """The Klayers API answered 404: no listing for that region, Python version or package."""
