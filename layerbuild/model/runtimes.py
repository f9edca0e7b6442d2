"""The Lambda Python runtime matrix: the single source of truth for targets.

Facts from ../shared/reference/lambda.md (AWS runtime pages, base-image Dockerfiles). Pure data and
pure functions only; nothing here touches the network or the disk.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from layerbuild.errors import TargetError

ARCHITECTURES = ("x86_64", "arm64")
# Lambda's architecture name -> the machine name in wheel tags, ELF headers and uname.
MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's architecture name -> Docker platform.
DOCKER_PLATFORM = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}

DEFAULT_PYTHON = "3.12"
DEFAULT_ARCHITECTURE = "x86_64"


@dataclass(frozen=True)
class OperatingSystem:
    name: str
    glibc: tuple[int, int]
    # Newest symbol versions the OS's own libstdc++ provides (GCC 7 on AL2, GCC 11 on AL2023).
    glibcxx: tuple[int, int, int]
    cxxabi: tuple[int, int, int]
    package_manager: str
    libraries_file: str  # the sonames its Lambda base image provides: layerbuild/audit/data/<file>


AMAZON_LINUX_2 = OperatingSystem("Amazon Linux 2", (2, 26), (3, 4, 24), (1, 3, 11), "yum", "al2-libs.txt")
AMAZON_LINUX_2023 = OperatingSystem("Amazon Linux 2023", (2, 34), (3, 4, 29), (1, 3, 13), "dnf", "al2023-libs.txt")

# Wheel-tag aliases from PEP 600: legacy manylinux names and the glibc they stand for.
_LEGACY_MANYLINUX = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}
# Oldest glibc a manylinux tag may name per machine (aarch64 wheels start at manylinux2014).
_OLDEST_GLIBC_MINOR = {"x86_64": 5, "aarch64": 17}
# uv's --python-platform only knows some glibc levels; take the newest one not above the target's.
_UV_GLIBC_LEVELS = ((2, 17), (2, 28), (2, 31), (2, 32), (2, 33), (2, 34), (2, 35))


# What every Lambda Python runtime ships in its own site directory (the AWS SDK and what it needs), by the
# names they are imported as; the runtime's directories come after the layers' on sys.path.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
# AWS's "Lambda runtimes" / "Building Lambda functions with Python" pages listed the SDK of each runtime
# until early 2024 (last seen with python3.12: docs.amazonaws.cn/lambda/latest/dg/python-programming-model.html,
# docs.aws.amazon.com/ko_kr/lambda/latest/dg/lambda-python.html); they now say only that it depends on the
# runtime version and region and changes as AWS updates the runtime.
_SDK_PAGE = "AWS Lambda runtimes page, SDK column (last published early 2024)"


@dataclass(frozen=True)
class RuntimeSdk:
    """The AWS SDK a runtime ships (boto3/botocore; their dependencies are resolved from these pins)."""

    boto3: str
    botocore: str
    source: str  # where the versions come from
    urllib3: str = "<2"  # botocore's ceiling on Amazon Linux 2's OpenSSL 1.0.2; images of 3.11+ were seen with 1.26.18

    def requirements(self) -> list[str]:
        return [f"boto3=={self.boto3}", f"botocore=={self.botocore}", f"urllib3{self.urllib3}"]


@dataclass(frozen=True)
class Runtime:
    python: str  # "3.12"
    os: OperatingSystem
    deprecated: str | None = None  # date the runtime was deprecated (or is scheduled to be)
    create_blocked: str | None = None
    status: str = "supported"  # "supported" | "deprecated"
    sdk: RuntimeSdk | None = None
    # .pyc magic numbers (first two bytes, little-endian) of this CPython minor version, as a range from
    # Lib/importlib/_bootstrap_external.py, so alpha/beta bumps within a version still match.
    pyc_magic: tuple[int, int] = (0, -1)
    # Architectures Klayers publishes layers for with this Python (arm64 listings start at 3.10).
    klayers: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"python{self.python}"

    @property
    def glibc(self) -> tuple[int, int]:
        return self.os.glibc

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    @property
    def cpython_tag(self) -> str:
        """The interpreter tag: cp312."""
        return "cp" + self.python.replace(".", "")

    def platform_tags(self, arch: str) -> list[str]:
        """Every manylinux platform tag a wheel may carry to run here, newest first."""
        machine = MACHINE[check_architecture(arch)]
        tags = []
        for minor in range(self.glibc[1], _OLDEST_GLIBC_MINOR[machine] - 1, -1):
            tags.append(f"manylinux_2_{minor}_{machine}")
            legacy = _LEGACY_MANYLINUX.get((2, minor))
            if legacy and not (machine == "aarch64" and legacy != "manylinux2014"):
                tags.append(f"{legacy}_{machine}")
        return tags

    def uv_platform(self, arch: str) -> str:
        """The --python-platform value for uv: never newer than this runtime's glibc."""
        level = self._uv_glibc()
        return f"{MACHINE[check_architecture(arch)]}-manylinux_{level[0]}_{level[1]}"

    def _uv_glibc(self) -> tuple[int, int]:
        return max(lv for lv in _UV_GLIBC_LEVELS if lv <= self.glibc)

    def extension_suffixes(self, arch: str) -> tuple[str, ...]:
        """File-name suffixes an extension module may have to load on this runtime."""
        machine = MACHINE[check_architecture(arch)]
        return (f".cpython-{self.cpython_tag[2:]}-{machine}-linux-gnu.so", ".abi3.so", ".so")

    def build_image(self, arch: str) -> str:
        return f"public.ecr.aws/sam/build-{self.name}:latest-{check_architecture(arch)}"

    def runtime_image(self, arch: str) -> str:
        return f"public.ecr.aws/lambda/python:{self.python}-{check_architecture(arch)}"

    @property
    def package_dirs(self) -> tuple[str, ...]:
        """Where the runtime image keeps its own packages (the SDK), in sys.path order after the layers'
        entries: 3.11+ in /var/lang/lib/python3.X/site-packages ahead of /var/runtime, 3.8-3.10 in
        /var/runtime ahead of it (AWS's "Working with .zip file archives for Python Lambda functions";
        sys.path printed by real 3.9 and 3.13 functions)."""
        site = f"/var/lang/lib/python{self.python}/site-packages"
        return (site, "/var/runtime") if self.version_tuple >= (3, 11) else ("/var/runtime", site)


_SDK_AL2_2023 = RuntimeSdk("1.26.90", "1.29.90", _SDK_PAGE)
# Runtimes launched after AWS stopped listing SDK versions: the boto3 release of the launch day.
_SDK_LAUNCH = "not published by AWS: the boto3 release of the runtime's launch ({})"

RUNTIMES: dict[str, Runtime] = {
    r.python: r
    for r in (
        Runtime("3.8", AMAZON_LINUX_2, "2024-10-14", "2025-02-28", "deprecated", _SDK_AL2_2023,
                pyc_magic=(3400, 3419), klayers=("x86_64",)),
        Runtime("3.9", AMAZON_LINUX_2, "2025-12-15", None, "deprecated", _SDK_AL2_2023,
                pyc_magic=(3420, 3429), klayers=("x86_64",)),
        Runtime("3.10", AMAZON_LINUX_2, "2026-10-31", "2026-11-30", "deprecated", _SDK_AL2_2023,
                pyc_magic=(3430, 3449), klayers=("x86_64", "arm64")),
        Runtime("3.11", AMAZON_LINUX_2, "2027-06-30", sdk=RuntimeSdk("1.27.1", "1.30.1", _SDK_PAGE),
                pyc_magic=(3450, 3499), klayers=("x86_64", "arm64")),
        Runtime("3.12", AMAZON_LINUX_2023, "2028-10-31", sdk=RuntimeSdk("1.28.72", "1.31.72", _SDK_PAGE),
                pyc_magic=(3500, 3549), klayers=("x86_64", "arm64")),
        Runtime("3.13", AMAZON_LINUX_2023, "2029-06-30", sdk=RuntimeSdk("1.35.60", "1.35.60", _SDK_LAUNCH.format(
            "2024-11-13, AWS's launch post")), pyc_magic=(3550, 3599), klayers=("x86_64", "arm64")),
        Runtime("3.14", AMAZON_LINUX_2023, "2029-06-30", sdk=RuntimeSdk("1.40.76", "1.40.76", _SDK_LAUNCH.format(
            "November 2025, unconfirmed")), pyc_magic=(3600, 3649), klayers=("x86_64", "arm64")),
    )
}


def closest(value: str, choices) -> str:
    """' (did you mean X?)' for a near miss, else ''."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def normalise_python(value: str) -> str:
    """Accept 3.12, python3.12, py312, p3.12 and 312; return '3.12'."""
    text = str(value).strip().lower()
    for prefix in ("python", "py", "p"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if "." not in text and text.isdigit() and len(text) >= 2:
        text = f"{text[0]}.{text[1:]}"
    return text


def get_runtime(value: str) -> Runtime:
    version = normalise_python(value)
    if version not in RUNTIMES:
        raise TargetError(
            f"unknown Python version {value!r}: Lambda runtimes are {', '.join(RUNTIMES)}"
            + closest(version, RUNTIMES)
        )
    return RUNTIMES[version]


def check_architecture(value: str) -> str:
    aliases = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64"}
    arch = aliases.get(str(value).lower(), str(value).lower())
    if arch not in ARCHITECTURES:
        raise TargetError(
            f"unknown architecture {value!r}: Lambda architectures are {', '.join(ARCHITECTURES)}"
            + closest(value, ARCHITECTURES)
        )
    return arch


@dataclass(frozen=True)
class Target:
    """One build target: a runtime on an architecture."""

    runtime: Runtime
    arch: str

    @property
    def python(self) -> str:
        return self.runtime.python

    @property
    def machine(self) -> str:
        return MACHINE[self.arch]

    def marker_environment(self, extra: str = "") -> dict[str, str]:
        """PEP 508 marker variables as they are on this target's Lambda runtime."""
        return {"python_version": self.python, "python_full_version": f"{self.python}.0", "platform_machine": self.machine,
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "extra": extra}  # fmt: skip

    @property
    def slug(self) -> str:
        """python3.12-x86_64: used in file names."""
        return f"{self.runtime.name}-{self.arch}"

    def __str__(self) -> str:
        return self.slug


def make_target(python: str, arch: str) -> Target:
    return Target(get_runtime(python), check_architecture(arch))


def matrix_rows() -> list[dict]:
    """The matrix as plain rows (for `layerbuild targets` and --json)."""
    rows = []
    for runtime in RUNTIMES.values():
        for arch in ARCHITECTURES:
            rows.append(
                {
                    "runtime": runtime.name,
                    "python": runtime.python,
                    "architecture": arch,
                    "os": runtime.os.name,
                    "glibc": "%d.%d" % runtime.glibc,
                    "status": runtime.status,
                    "deprecation_date": runtime.deprecated,
                    "platform_tags": runtime.platform_tags(arch),
                    "build_image": runtime.build_image(arch),
                    "runtime_image": runtime.runtime_image(arch),
                    "sdk": {"boto3": runtime.sdk.boto3, "botocore": runtime.sdk.botocore, "source": runtime.sdk.source}
                    if runtime.sdk else None,
                    "runtime_package_dirs": list(runtime.package_dirs),
                }
            )
    return rows
