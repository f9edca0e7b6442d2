"""The docker backend: lock, compile and install inside the Lambda build image.

For requirements without a compatible wheel (C extensions from source, packages linking system
libraries). Steps, each a container on the engine that DOCKER_HOST (or the default socket) names:

1. the build image (--image > LAYERBUILD_BUILD_IMAGE > recipe `image:` > the runtime's SAM build image)
   is pulled once for the target's platform;
2. a *derived* image is made once per (image, platform, system_packages) by a root container that
   installs the system packages with the image's package manager and pip-tools into a venv of the
   image's python, then committed and tagged `layerbuild-build:<hash>` (reused while it exists);
3. the build runs as the host's uid:gid with only a work directory mounted (plus the CA bundle,
   read-only, and the pip cache volume): `pip-compile --generate-hashes` unless a lock is given,
   `pip install --require-hashes --no-deps --target`, then the recipe's `libs` copied into lib/.

No AWS_* variable and nothing from the user's home ever reaches a container. The pure parts
(image choice, scripts, parsing container output) are separate from the engine calls.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from layerbuild.backends.base import IMAGE_ENV, BuildRequest, LayerTree
from layerbuild.backends.distinfo import installed_packages
from layerbuild.backends.docker.engine import Engine, ImageInfo, Mount, RunSpec
from layerbuild.backends.indexes import local_path
from layerbuild.errors import (
    BuildError,
    BuildImageError,
    CompileError,
    LockError,
    ResolveError,
    SystemPackageError,
)
from layerbuild.model.lockfile import Lock, requirements_digest
from layerbuild.model.recipe import build_env_refusal
from layerbuild.model.runtimes import DOCKER_PLATFORM, Target
from layerbuild.util.tls import system_ca_bundle

NAME = "docker"
PIP_CACHE_VOLUME_ENV = "LAYERBUILD_PIP_CACHE_VOLUME"
DEFAULT_PIP_CACHE_VOLUME = "layerbuild-pip-cache"
TIMEOUT_ENV = "LAYERBUILD_DOCKER_TIMEOUT"
DERIVED_REPOSITORY = "layerbuild-build"
# pip-tools for the image's own python (7.4 is the oldest with the options used here and still runs on 3.8), and
# a pip that reuses wheels it built from an sdist in --require-hashes mode (23.1+), so rebuilds compile nothing.
TOOLS_REQUIREMENT = "pip-tools>=7.4,<8"
PIP_REQUIREMENT = "pip>=23.1"
TOOLS_VENV = "/opt/layerbuild-tools"
CA_PATH = "/etc/layerbuild/ca-bundle.crt"
PIP_CACHE_PATH = "/pip-cache"
WORK_PATH = "/work"
LOG_TAIL_LINES = 200
# Where build images keep shared libraries: Lambda's /var/lang, Amazon Linux, Debian multiarch, local.
LIB_DIRS = ("/var/lang/lib", "/usr/lib64", "/lib64", "/usr/local/lib64", "/usr/local/lib", "/usr/lib/$(uname -m)-linux-gnu",
            "/lib/$(uname -m)-linux-gnu", "/usr/lib", "/lib")  # fmt: skip
# Reproducible compiles: no debug info (it embeds pip's random build paths, and with them the build-id),
# fixed timestamps. A recipe's build_env overrides these.
DEFAULT_BUILD_ENV = {"CFLAGS": "-g0", "CXXFLAGS": "-g0", "SOURCE_DATE_EPOCH": "315532800"}

# Runs as root in the base image: probe, install system packages and pip-tools. Args: python version, packages...
DERIVE_SCRIPT = r"""
set -u
umask 0000  # the pip cache volume is shared by every uid that builds
want="$1"; shift
chmod 1777 /tmp 2>/dev/null || true
pm=""
for candidate in dnf microdnf yum apt-get; do
    if command -v "$candidate" >/dev/null 2>&1; then pm="$candidate"; break; fi
done
py="$(command -v "python$want" || command -v python3 || true)"
if [ -z "$py" ]; then echo "layerbuild-fail: no-python"; exit 90; fi
version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
echo "layerbuild-probe: package_manager=$pm python=$py version=$version machine=$(uname -m)"
if [ "$version" != "$want" ]; then echo "layerbuild-fail: python-version"; exit 94; fi
if [ "$#" -gt 0 ]; then
    echo "layerbuild-step: system-packages $*"
    case "$pm" in
        apt-get) apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
                 && rm -rf /var/lib/apt/lists/* ;;
        dnf|microdnf) "$pm" install -y "$@" && "$pm" clean all ;;
        yum) yum install -y --setopt=skip_missing_names_on_install=False "$@" && yum clean all ;;
        *) echo "layerbuild-fail: no-package-manager"; exit 91 ;;
    esac || { echo "layerbuild-fail: system-packages"; exit 92; }
fi
echo "layerbuild-step: tools"
"$py" -m venv __VENV__ && __VENV__/bin/python -m pip install -q --disable-pip-version-check "__PIP__" "__TOOLS__" \
    || { echo "layerbuild-fail: tools"; exit 93; }
""".replace("__VENV__", TOOLS_VENV).replace("__TOOLS__", TOOLS_REQUIREMENT).replace("__PIP__", PIP_REQUIREMENT)

# Runs as the host user in the derived image, in /work. Args: steps (lock|install|lock,install), lib globs...
BUILD_SCRIPT = r"""
set -u
umask 0000  # the pip cache volume is shared by every uid that builds (the work dir is private on the host)
steps="$1"; shift
tools=__VENV__/bin/python
mkdir -p /work/home && export HOME=/work/home
case "$steps" in *lock*)
    echo "layerbuild-step: lock"
    "$tools" -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header --no-annotate \
        --no-emit-index-url --no-emit-trusted-host --cache-dir "$PIP_CACHE_DIR/pip-tools" -o lock.txt requirements.in \
        || { echo "layerbuild-fail: lock"; exit 80; } ;;
esac
case "$steps" in *install*)
    echo "layerbuild-step: install"
    mkdir -p layer/python
    "$tools" -m pip install --require-hashes --no-deps --no-compile --disable-pip-version-check --no-input \
        --target layer/python -r lock.txt || { echo "layerbuild-fail: install"; exit 81; }
    for pattern in "$@"; do
        mkdir -p layer/lib
        found=""
        for dir in __LIBDIRS__; do
            for path in "$dir"/$pattern; do
                [ -f "$path" ] || continue
                found=1
                name="$(basename "$path")"
                [ -e "layer/lib/$name" ] && continue
                cp -L "$path" "layer/lib/$name" || { echo "layerbuild-fail: lib $pattern"; exit 82; }
                echo "layerbuild-lib: $name <- $path"
            done
        done
        [ -n "$found" ] || { echo "layerbuild-fail: lib-missing $pattern"; exit 83; }
    done ;;
esac
""".replace("__VENV__", TOOLS_VENV).replace("__LIBDIRS__", " ".join(LIB_DIRS))


# ---- pure logic -------------------------------------------------------------------------------------


def choose_image(cli_image: str | None, environ: dict, recipe_image: str | None, target: Target) -> tuple[str, str]:
    """(image, where it came from): --image > LAYERBUILD_BUILD_IMAGE > recipe image: > the runtime's default."""
    if cli_image:  # build.py passes LAYERBUILD_BUILD_IMAGE down as the request's image (for the cache key)
        return cli_image, IMAGE_ENV if cli_image == environ.get(IMAGE_ENV) else "--image"
    if environ.get(IMAGE_ENV):
        return environ[IMAGE_ENV], IMAGE_ENV
    if recipe_image:
        return recipe_image, "the recipe's image"
    return target.runtime.build_image(target.arch), "the default for " + target.slug


def derived_tag(base: ImageInfo, platform: str, system_packages) -> str:
    """The tag of the derived image: changes with the base image's id, the packages and the scripts."""
    payload = "\n".join([base.id, platform, " ".join(sorted(system_packages)), TOOLS_REQUIREMENT, DERIVE_SCRIPT])
    return f"{DERIVED_REPOSITORY}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def cache_subdir(derived: str, build_env) -> str:
    """The pip cache directory in the volume for one build configuration.

    pip keys the wheels it builds by the sdist's URL alone: a wheel compiled against other system packages
    or with other build_env flags must never be reused, so each (derived image, build_env) has its own.
    """
    payload = "\n".join([derived, *(f"{k}={v}" for k, v in sorted(build_env))])
    return f"{PIP_CACHE_PATH}/{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def container_env(index, build_env, ca_mounted: bool, cache_dir: str = PIP_CACHE_PATH + "/tools") -> dict[str, str]:
    """The container's whole environment: built from scratch, never copied from the host."""
    env = {"PIP_INDEX_URL": index.index_url, "PIP_CACHE_DIR": cache_dir, "PIP_NO_INPUT": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off", "PYTHONDONTWRITEBYTECODE": "1",
           "LANG": "C.UTF-8", **DEFAULT_BUILD_ENV}  # fmt: skip
    if index.extra_index_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(index.extra_index_urls)
    if ca_mounted:
        env.update({"PIP_CERT": CA_PATH, "SSL_CERT_FILE": CA_PATH, "REQUESTS_CA_BUNDLE": CA_PATH})
    # The recipe's build_env was validated (recipe.build_env_refusal); the same rule again here, for a Recipe
    # made in code: nothing that changes which code or index is used, no credentials.
    env.update({k: v for k, v in dict(build_env).items() if build_env_refusal(k) is None})
    return {k: v for k, v in env.items() if not k.upper().startswith("AWS_")}


@dataclass(frozen=True)
class Probe:
    package_manager: str
    python: str
    version: str
    machine: str


_PROBE = re.compile(r"^layerbuild-probe: (.*)$", re.M)
_FAIL = re.compile(r"^layerbuild-fail: (\S+)(?: (.*))?$", re.M)


def parse_probe(output: str) -> Probe | None:
    match = _PROBE.search(output)
    if not match:
        return None
    fields = dict(part.split("=", 1) for part in match.group(1).split() if "=" in part)
    return Probe(fields.get("package_manager", ""), fields.get("python", ""), fields.get("version", ""),
                 fields.get("machine", ""))  # fmt: skip


def failure(output: str) -> tuple[str, str]:
    """The failed step the scripts reported: (kind, detail), or ("", "")."""
    matches = list(_FAIL.finditer(output))
    if not matches:
        return "", ""
    return matches[-1].group(1), (matches[-1].group(2) or "").strip()


_MISSING_PACKAGE = (
    re.compile(r"Unable to locate package (\S+)"),  # apt-get
    re.compile(r"No match for argument: (\S+)"),  # dnf
    re.compile(r"No package (\S+) available"),  # yum
    re.compile(r"No package matches '([^']+)'"),  # microdnf
    re.compile(r"Package '?(\S+?)'? has no installation candidate"),  # apt-get (virtual packages)
)


def missing_system_packages(output: str) -> list[str]:
    names = []
    for pattern in _MISSING_PACKAGE:
        names += [m.group(1) for m in pattern.finditer(output)]
    return list(dict.fromkeys(names))


_BUILDING = re.compile(r"Building wheel for (\S+)")
_FAILED_TO_BUILD = re.compile(r"Failed (?:building wheel for|to build) (?!installable)([A-Za-z0-9._-]+)")


def compile_failure(output: str) -> tuple[str, str] | None:
    """(package, reason) when pip's output shows a package failing to build, else None."""
    if "subprocess-exited-with-error" not in output and "Failed to build" not in output:
        return None
    package = ""
    failed = _FAILED_TO_BUILD.findall(output)
    if failed:
        package = failed[-1]
    else:
        building = _BUILDING.findall(output)
        package = building[-1] if building else ""
    if not package:
        collecting = re.findall(r"^Collecting (\S+)", output, re.M)
        package = re.split(r"[=<>!~\[ ]", collecting[-1])[0] if collecting else "a requirement"
    reasons = [ln.strip() for ln in output.splitlines()
               if re.match(r"\s*(error|.*: error|.*fatal error)\b", ln, re.I) and "subprocess-exited-with-error" not in ln
               and "legacy-install-failure" not in ln and "metadata-generation-failed" not in ln]  # fmt: skip
    specific = [r for r in reasons if re.search(r"\berror:", r) and not r.startswith("ERROR:")]
    reason = (specific or reasons or ["see the log"])[0]
    return package, reason


def last_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("layerbuild-")]
    errors = [ln for ln in lines if ln.startswith(("ERROR:", "error:", "E:"))]
    return (errors or lines or ["no output"])[-1]


def soname(path: Path) -> str | None:
    """The DT_SONAME of a shared library, or None."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as handle:
            for section in ELFFile(handle).iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            return tag.soname
    except (ELFError, OSError, ValueError):
        return None
    return None


def dedupe_libs(lib_dir: Path) -> list[str]:
    """Keep one copy of each library a glob matched under several names (libz.so, libz.so.1, libz.so.1.2.13).

    The copy kept is the one named by its soname, which is what the dynamic loader looks for; the others
    are removed. Returns the names kept.
    """
    if not lib_dir.is_dir():
        return []
    groups: dict[str, list[Path]] = {}
    for path in sorted(lib_dir.iterdir()):
        groups.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path)
    kept = []
    for paths in groups.values():
        names = {p.name: p for p in paths}
        wanted = soname(paths[0])
        keep = names.get(wanted) if wanted else None
        keep = keep or min(paths, key=lambda p: (len(p.name), p.name))
        for path in paths:
            if path != keep:
                path.unlink()
        kept.append(keep.name)
    return sorted(kept)


def log_tail(output: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(output.splitlines()[-lines:]) + "\n"


# ---- side effects -----------------------------------------------------------------------------------


def _timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, "3600")))
    except ValueError:
        return 3600.0


def _pip_cache_volume() -> str:
    return os.environ.get(PIP_CACHE_VOLUME_ENV) or DEFAULT_PIP_CACHE_VOLUME


def log_path_for(request: BuildRequest) -> Path:
    folder = getattr(request, "out_dir", None) or Path(tempfile.gettempdir())
    return Path(folder) / f"{request.recipe.name}-{request.target.slug}.build.log"


def _write_log(path: Path, text: str) -> Path:
    """Atomically: a reader never sees half a log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(name, 0o644)
    os.replace(name, path)
    return path


@dataclass
class Prepared:
    engine: Engine
    image: str  # the image the user asked for
    derived: str  # the derived image the build runs in
    platform: str
    probe: Probe
    ca_bundle: Path | None


def prepare(request: BuildRequest) -> Prepared:
    """Engine, base image, pip cache volume and derived image for the request's target."""
    recipe, target = request.recipe, request.target
    local = [url for url in (request.index.index_url, *request.index.extra_index_urls) if local_path(url) is not None]
    if local:  # the container does not see the host's directories
        raise BuildError(f"index {local[0]}: a local file:// index is read by the wheels backend only; the docker "
                         f"backend's build container cannot see it: build with --backend wheels, or serve the "
                         f"directory over http(s) (e.g. 'python -m http.server')")  # fmt: skip
    image, source = choose_image(request.image, os.environ, recipe.image, target)
    platform = DOCKER_PLATFORM[target.arch]
    engine = Engine.connect()
    base = engine.ensure_image(image, platform)
    if base.platform != platform:
        raise BuildImageError(
            f"build image {image!r} ({source}) is {base.platform} but {target.slug} needs {platform}: "
            f"use an image for {platform} ('docker pull --platform {platform} {image}') or pass --image"
        )
    ca_bundle = system_ca_bundle()
    volume = _pip_cache_volume()
    if engine.ensure_volume(volume):
        # A new volume is root's; builds run as the host user, so make it shared (sticky, like /tmp).
        engine.run(RunSpec(base.reference, ["/bin/sh", "-c", f"chmod 1777 {PIP_CACHE_PATH}"], platform,
                           mounts=[Mount(volume, PIP_CACHE_PATH, volume=True)], timeout=120))  # fmt: skip
    tag = derived_tag(base, platform, recipe.system_packages)
    derived = engine.local_image(tag)
    if derived is None:
        derived = _derive(engine, request, image, base, platform, tag, ca_bundle, volume)
    labels = derived.labels
    probe = Probe(labels.get("layerbuild.package_manager", ""), labels.get("layerbuild.python", ""),
                  labels.get("layerbuild.python_version", ""), labels.get("layerbuild.machine", ""))  # fmt: skip
    if probe.version != target.python:  # the derived image is shared by every target of its base image
        raise python_mismatch(image, probe, target)
    return Prepared(engine, image, tag, platform, probe, ca_bundle)


def python_mismatch(image: str, probe: Probe | None, target: Target) -> BuildImageError:
    found = f"Python {probe.version} ({probe.python})" if probe else "another Python"
    return BuildImageError(
        f"build image {image!r} has {found} but the target is {target.runtime.name}: use an image for "
        f"{target.runtime.name} (default: {target.runtime.build_image(target.arch)}) or build for --python {probe.version if probe else '?'}"
    )


def _mounts(ca_bundle: Path | None, volume: str, work: Path | None = None) -> list[Mount]:
    mounts = [Mount(volume, PIP_CACHE_PATH, volume=True)]
    if ca_bundle:
        mounts.append(Mount(str(Path(ca_bundle).resolve()), CA_PATH, read_only=True))
    if work:
        mounts.append(Mount(str(work), WORK_PATH))
    return mounts


def _derive(engine: Engine, request: BuildRequest, image: str, base: ImageInfo, platform: str, tag: str,
            ca_bundle: Path | None, volume: str) -> ImageInfo:  # fmt: skip
    recipe, target = request.recipe, request.target
    env = container_env(request.index, (), ca_bundle is not None)
    spec = RunSpec(image, ["/bin/sh", "-c", DERIVE_SCRIPT, "layerbuild-derive", target.python, *recipe.system_packages],
                   platform, environment=env, mounts=_mounts(ca_bundle, volume), timeout=_timeout())  # fmt: skip
    # The probe is only known once the script ran: commit under a scratch tag, then label that image.
    repository, _, name = tag.partition(":")
    scratch = f"{name}-unlabelled-{uuid.uuid4().hex[:12]}"  # unique: targets may derive the same image at once
    result = engine.run(spec, commit_as=(repository, scratch, []))
    probe = parse_probe(result.output)
    kind, _ = failure(result.output)
    where = f"build image {image!r}"
    if result.exit_code != 0 or probe is None:
        if kind == "no-python":
            raise BuildImageError(f"{where} has no python{target.python} or python3 on its PATH: it cannot build for {target.slug}")
        if kind == "python-version":
            raise python_mismatch(image, probe, target)
        log = _write_log(log_path_for(request), log_tail(result.output))
        if kind == "no-package-manager":
            raise SystemPackageError(
                f"{recipe.path or recipe.name}: field 'system_packages': {where} has no package manager "
                "(dnf, microdnf, yum or apt-get) to install them with"
            )
        if kind == "system-packages":
            missing = missing_system_packages(result.output)
            manager = probe.package_manager if probe else "the package manager"
            if missing:
                raise SystemPackageError(
                    f"{recipe.path or recipe.name}: field 'system_packages': {manager} in {where} cannot find "
                    f"{', '.join(repr(m) for m in missing)}; check the package names for that image's OS (log: {log})"
                )
            raise SystemPackageError(
                f"{recipe.path or recipe.name}: field 'system_packages': {manager} in {where} failed to install "
                f"{', '.join(recipe.system_packages)}: {last_error_line(result.output)}; log: {log}"
            )
        if kind == "tools":
            from layerbuild.util.netsafe import redact_text, redact_url

            raise BuildError(f"cannot install {TOOLS_REQUIREMENT} into {where} from {redact_url(request.index.index_url)}: "
                             f"{redact_text(last_error_line(result.output))}; log: {log}")  # fmt: skip
        raise BuildError(f"preparing {where} failed (exit status {result.exit_code}): {last_error_line(result.output)}; log: {log}")
    labels = {"layerbuild.base": base.id, "layerbuild.package_manager": probe.package_manager,
              "layerbuild.python": probe.python, "layerbuild.python_version": probe.version,
              "layerbuild.machine": probe.machine}  # fmt: skip
    return engine.relabel(f"{repository}:{scratch}", repository, name, labels, platform)


def run_build(request: BuildRequest, steps: str, user: tuple[int, int] | None = None) -> tuple[Prepared, Path, str]:
    """Run the build container for the steps; returns (prepared, mount dir, output). Raises on failure."""
    recipe = request.recipe
    prepared = prepare(request)
    uid, gid = user if user is not None else (os.getuid(), os.getgid())
    work = request.work_dir / "docker"
    work.mkdir(parents=True, exist_ok=True)
    (work / "requirements.in").write_text("\n".join(recipe.packages) + "\n", encoding="utf-8")
    if request.lock is not None and "lock" not in steps:
        (work / "lock.txt").write_text(request.lock.body, encoding="utf-8")
    if os.geteuid() == 0 and uid != 0:
        for path in [work, *work.rglob("*")]:  # root builds for another uid (tests): let it write here
            os.chown(path, uid, gid)
    env = container_env(request.index, recipe.build_env, prepared.ca_bundle is not None,
                        cache_subdir(prepared.derived, recipe.build_env))  # fmt: skip
    spec = RunSpec(prepared.derived, ["/bin/sh", "-c", BUILD_SCRIPT, "layerbuild-build", steps, *recipe.libs],
                   prepared.platform, user=f"{uid}:{gid}", environment=env, working_dir=WORK_PATH,
                   mounts=_mounts(prepared.ca_bundle, _pip_cache_volume(), work), timeout=_timeout())  # fmt: skip
    result = prepared.engine.run(spec)
    (work / "container.log").write_text(result.output, encoding="utf-8")
    if result.exit_code != 0:
        _raise_build_failure(request, prepared, result.output, result.exit_code)
    return prepared, work, result.output


def _raise_build_failure(request: BuildRequest, prepared: Prepared, output: str, exit_code: int):
    recipe, target = request.recipe, request.target
    kind, detail = failure(output)
    where = f"in {prepared.image} for {target.slug}"
    log = _write_log(log_path_for(request), log_tail(output))
    compiled = compile_failure(output)
    if compiled:
        package, reason = compiled
        raise CompileError(f"{package} failed to compile {where}: {reason}; the last lines of the compiler output are in {log}",
                           package, log)  # fmt: skip
    if kind == "lib-missing":
        raise BuildError(
            f"{recipe.path or recipe.name}: field 'libs': {detail!r} matches no shared library {where} "
            f"(searched {', '.join(d for d in LIB_DIRS if '$' not in d)} and the multiarch directories); "
            "add the system package that provides it to system_packages"
        )
    if kind == "install" and "DO NOT MATCH THE HASHES" in output:
        raise LockError(f"hash mismatch installing {where}: a downloaded file does not match the hash in the lock "
                        f"(changed or tampered upstream; re-lock only if you trust the new file); log: {log}")  # fmt: skip
    if kind == "install" and "hashes are required" in output.lower():
        raise LockError(f"the lock for {target.slug} lacks hashes for files the image needs (it was made by another "
                        f"backend): run 'layerbuild lock {recipe.name}' again; log: {log}")  # fmt: skip
    if kind in ("lock", "install"):
        verb = "resolve" if kind == "lock" else "install"
        raise ResolveError(f"cannot {verb} {where}: {last_error_line(output)}; log: {log}")
    raise BuildError(f"the build container failed {where} (exit status {exit_code}): {last_error_line(output)}; log: {log}")


def resolve_lock(request: BuildRequest, user: tuple[int, int] | None = None) -> Lock:
    """A lock made in the build image by pip-compile: the target interpreter's exact markers and hashes."""
    _, work, _ = run_build(request, "lock", user)
    return _lock_from(request, (work / "lock.txt").read_text(encoding="utf-8"))


def _lock_from(request: BuildRequest, body: str) -> Lock:
    return Lock(target_slug=request.target.slug, requirements_sha256=requirements_digest(request.recipe),
                body=body, backend=NAME)  # fmt: skip


def build(request: BuildRequest, user: tuple[int, int] | None = None) -> LayerTree:
    """Build the layer tree in the image; `user` (uid, gid) overrides the host user (tests run as root)."""
    target = request.target
    steps = "install" if request.lock is not None else "lock,install"
    prepared, work, output = run_build(request, steps, user)
    lock = request.lock or _lock_from(request, (work / "lock.txt").read_text(encoding="utf-8"))
    root = work / "layer"
    site = root / "python"
    libs = dedupe_libs(root / "lib")
    notes = [f"built in {prepared.image} ({prepared.probe.python or 'python'} {prepared.probe.version})"]
    if libs:
        notes.append(f"libs copied into lib/: {', '.join(libs)}")
    log_path_for(request).unlink(missing_ok=True)  # a failed build's log no longer describes this target
    return LayerTree(root=root, packages=installed_packages(site), backend=NAME, lock_text=lock.render(target), notes=notes)
