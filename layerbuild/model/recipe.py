"""The recipe model: recipes/NAME.yaml parsed and strictly validated into a Recipe.

Pure logic apart from reading the file. Every problem is reported as one line naming the file and
the field, and what would be valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from layerbuild.errors import RecipeError, TargetError
from layerbuild.limits import RECIPE_MAX_BYTES, read_capped_text
from layerbuild.model.runtimes import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    DEFAULT_PYTHON,
    RUNTIMES,
    Target,
    check_architecture,
    closest,
    get_runtime,
)

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SYSTEM_PACKAGE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
LIB_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+*?\[\]-]*$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
URL_PATTERN = re.compile(r"^(https?|file)://\S+$")
LOCAL_INDEX_PATTERN = re.compile(r"^file://(localhost)?/\S*$")
INDEX_URL_VALID = ("an http(s):// index URL, or a local directory as file:///path (a PEP 503 tree with "
                   "PROJECT/index.html, or a directory of wheels)")
SPDX_PATTERN = re.compile(r"^[A-Za-z0-9.+()\- ]{1,100}$")
BYTECODE_MODES = ("alongside", "only", "none")
BACKENDS = ("auto", "wheels", "docker")
# build_env: variables a recipe may not set, compared case-insensitively (pip and uv read lower-case
# proxies, and `aws_secret_access_key` is as secret as its upper-case twin). Each rule is (exact names,
# name prefixes, name suffixes, why). Everything else is allowed: compiler and package build knobs such as
# CFLAGS, LDFLAGS, MAKEFLAGS, CC, NPY_*, SODIUM_INSTALL; an allow list could not know every package's own.
BUILD_ENV_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str], ...] = (
    ((), ("AWS_",), (), "AWS_* variables are never passed to builds (credentials stay on the host)"),
    (("PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS",
      "PS4", "IFS", "CDPATH", "PERL5LIB", "PERLLIB", "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "HOME"),
     ("LD_", "BASH_FUNC_", "GIT_", "XDG_"), (),
     "it changes which programs, libraries or configuration the build runs"),
    (("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
      "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE", "PYTHONWARNINGS", "PYTHONBREAKPOINT", "PYTHONPYCACHEPREFIX",
      "PYTHONINSPECT", "PYTHONCASEOK", "VIRTUAL_ENV", "CONDA_PREFIX"), ("PYTHONDEVMODE",), (),
     "it changes which Python code the build imports"),
    ((), ("PIP_", "UV_", "PIPENV_", "POETRY_", "PDM_", "LAYERBUILD_", "TWINE_"), ("_INDEX_URL", "_INDEX", "_FIND_LINKS"),
     "installer settings would bypass the recipe's index_url and the lock's hashes; use index_url/extra_index_urls"),
    (("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"), (), (),
     "it changes which certificates the build trusts for downloads (the host's CA bundle is used)"),
)


# Allowed although a rule above matches: which of the locked release's files pip builds from (the docker tests
# force a source build so); every file is still checked against the lock's hashes.
BUILD_ENV_ALLOWED = ("PIP_NO_BINARY", "PIP_ONLY_BINARY", "PIP_PREFER_BINARY")


def build_env_refusal(name: str) -> str | None:
    """Pure: why a recipe may not set this build_env variable, or None when it may."""
    upper = name.upper()
    if upper in BUILD_ENV_ALLOWED:
        return None
    for names, prefixes, suffixes, why in BUILD_ENV_RULES:
        if upper in names or upper.startswith(prefixes) or upper.endswith(suffixes):
            return why
    return None


@dataclass(frozen=True)
class Recipe:
    name: str
    packages: tuple[str, ...]
    python: tuple[str, ...] = (DEFAULT_PYTHON,)
    architectures: tuple[str, ...] = (DEFAULT_ARCHITECTURE,)
    description: str = ""
    license: str | None = None
    exclude: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    backend: str = "auto"
    # Docker backend
    image: str | None = None
    system_packages: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    build_env: tuple[tuple[str, str], ...] = ()
    # Layer contents
    bytecode: str = "alongside"
    slim: bool = True
    path: Path | None = field(default=None, compare=False)

    @property
    def requirements(self) -> list[Requirement]:
        return [Requirement(p) for p in self.packages]

    @property
    def project_names(self) -> list[str]:
        return [canonicalize_name(r.name) for r in self.requirements]

    def targets(self, pythons=None, arches=None) -> list[Target]:
        """The recipe's python x architecture matrix, optionally narrowed."""
        chosen_py = [get_runtime(p).python for p in pythons] if pythons else list(self.python)
        chosen_arch = [check_architecture(a) for a in arches] if arches else list(self.architectures)
        return [Target(get_runtime(p), a) for p in chosen_py for a in chosen_arch]

    def lock_dir(self) -> Path:
        base = self.path.parent if self.path else RECIPES_DIR
        return base / f"{self.name}.lock"

    def lock_path(self, target: Target) -> Path:
        return self.lock_dir() / f"{target.slug}.txt"

    def to_dict(self) -> dict:
        """The normalised recipe (stable key order), for manifests and cache keys."""
        return {
            "name": self.name,
            "description": self.description,
            "packages": list(self.packages),
            "python": list(self.python),
            "architectures": list(self.architectures),
            "license": self.license,
            "exclude": list(self.exclude),
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "imports": list(self.imports),
            "backend": self.backend,
            "image": self.image,
            "system_packages": list(self.system_packages),
            "libs": list(self.libs),
            "build_env": dict(self.build_env),
            "bytecode": self.bytecode,
            "slim": self.slim,
        }


FIELDS = (
    "name", "description", "packages", "python", "architectures", "license", "exclude",
    "index_url", "extra_index_urls", "imports", "backend", "image", "system_packages", "libs",
    "build_env", "bytecode", "slim",
)  # fmt: skip


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, fieldname: str, message: str):
        raise RecipeError(f"{self.source}: field '{fieldname}': {message}")

    def string(self, data, key, *, required=False, pattern=None, valid="", max_len=None):
        if key not in data or data[key] is None:
            if required:
                self.fail(key, f"is required ({valid})" if valid else "is required")
            return None
        value = data[key]
        if not isinstance(value, str) or isinstance(value, bool):
            self.fail(key, f"must be a string, got {_typename(value)}")
        if max_len and len(value) > max_len:
            self.fail(key, f"is {len(value)} characters; at most {max_len}")
        if pattern and not pattern.match(value):
            self.fail(key, f"invalid value {value!r}" + (f": {valid}" if valid else ""))
        return value

    def string_list(self, data, key, *, pattern=None, valid="", allow_scalar=True):
        if key not in data or data[key] is None:
            return None
        value = data[key]
        if allow_scalar and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            self.fail(key, f"must be a list of strings, got {_typename(value)}")
        out = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                self.fail(f"{key}[{index}]", f"must be a string, got {_typename(item)}")
            item = str(item).strip()
            if not item:
                self.fail(f"{key}[{index}]", "must not be empty")
            if pattern and not pattern.match(item):
                self.fail(f"{key}[{index}]", f"invalid value {item!r}" + (f": {valid}" if valid else ""))
            out.append(item)
        return out


def _typename(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)  # fmt: skip


def parse_recipe(data, source: str, path: Path | None = None) -> Recipe:
    """Validate a parsed YAML document and build a Recipe. Pure: no I/O."""
    v = _Validator(source)
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of fields ({', '.join(FIELDS[:4])}, ...), got {_typename(data)}")
    for key in data:
        if not isinstance(key, str) or key not in FIELDS:
            raise RecipeError(
                f"{source}: unknown field {str(key)!r}{closest(key, FIELDS)}; valid fields: {', '.join(FIELDS)}"
            )

    name = v.string(data, "name", required=True, pattern=NAME_PATTERN,
                    valid="lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters")  # fmt: skip

    packages = v.string_list(data, "packages", allow_scalar=False)
    if not packages:
        v.fail("packages", "is required: a non-empty list of requirement strings such as 'pymysql==1.1.1'")
    seen = {}
    for index, text in enumerate(packages):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            v.fail(f"packages[{index}]", f"invalid requirement {text!r}: {str(exc).splitlines()[0]} (PEP 508, e.g. 'pymysql>=1.1')")
        if req.url:
            v.fail(f"packages[{index}]", f"{text!r}: direct URL requirements are not supported; use index_url")
        key = canonicalize_name(req.name)
        if key in seen:
            v.fail(f"packages[{index}]", f"{req.name!r} is listed twice (also packages[{seen[key]}])")
        seen[key] = index

    pythons = v.string_list(data, "python") or [DEFAULT_PYTHON]
    norm_py = []
    for index, item in enumerate(pythons):
        raw = data.get("python")  # `python: []` falls back to the default: no raw item to inspect
        if isinstance(raw, list) and index < len(raw) and isinstance(raw[index], float):
            item = repr(data["python"][index])  # YAML 3.10 parses as 3.1: ask for quotes
            v.fail(f"python[{index}]", f"{item} is a number; quote versions like \"3.10\" (valid: {', '.join(RUNTIMES)})")
        try:
            norm_py.append(get_runtime(item).python)
        except TargetError:
            v.fail(f"python[{index}]", f"unknown Python version {item!r}; valid: {', '.join(RUNTIMES)}{closest(item, RUNTIMES)}")

    arches = v.string_list(data, "architectures") or [DEFAULT_ARCHITECTURE]
    norm_arch = []
    for index, item in enumerate(arches):
        try:
            norm_arch.append(check_architecture(item))
        except TargetError:
            v.fail(f"architectures[{index}]", f"unknown architecture {item!r}; valid: {', '.join(ARCHITECTURES)}{closest(item, ARCHITECTURES)}")

    description = v.string(data, "description", max_len=256) or ""
    license_ = v.string(data, "license", max_len=512)
    if license_ is not None and not (SPDX_PATTERN.match(license_) or URL_PATTERN.match(license_)):
        v.fail("license", f"invalid value {license_!r}: an SPDX identifier such as 'MIT' or a URL")

    exclude = v.string_list(data, "exclude") or []
    for index, pattern in enumerate(exclude):
        if pattern.startswith("/") or ".." in pattern.split("/"):
            v.fail(f"exclude[{index}]", f"{pattern!r} must be a relative glob inside the layer, e.g. 'python/**/tests/**'")

    index_url = v.string(data, "index_url", pattern=URL_PATTERN, valid=INDEX_URL_VALID)
    extra = v.string_list(data, "extra_index_urls", pattern=URL_PATTERN, valid=INDEX_URL_VALID) or []
    for fieldname, url in [("index_url", index_url), *((f"extra_index_urls[{i}]", u) for i, u in enumerate(extra))]:
        if url and url.startswith("file:") and not LOCAL_INDEX_PATTERN.match(url):
            v.fail(fieldname, f"invalid value {url!r}: a local index is an absolute directory path, file:///path/to/dir "
                              f"(no host); valid: {INDEX_URL_VALID}")  # fmt: skip
    imports = v.string_list(data, "imports", pattern=MODULE_PATTERN, valid="a dotted module name such as 'PIL.Image'") or []
    backend = v.string(data, "backend") or "auto"
    if backend not in BACKENDS:
        v.fail("backend", f"invalid value {backend!r}; valid: {', '.join(BACKENDS)}{closest(backend, BACKENDS)}")
    image = v.string(data, "image", pattern=re.compile(r"^\S+$"), valid="an image reference such as 'public.ecr.aws/sam/build-python3.12'")
    system_packages = v.string_list(data, "system_packages", pattern=SYSTEM_PACKAGE_PATTERN, valid="a package name such as 'mariadb-connector-c-devel'") or []
    libs = v.string_list(data, "libs", pattern=LIB_PATTERN, valid="a shared library file name or glob such as 'libmariadb.so*'") or []

    build_env = data.get("build_env") or {}
    if not isinstance(build_env, dict):
        v.fail("build_env", f"must be a mapping of variable names to strings, got {_typename(build_env)}")
    env_items = []
    for key, value in build_env.items():
        if not isinstance(key, str) or not ENV_NAME_PATTERN.match(key):
            v.fail("build_env", f"invalid variable name {key!r}: letters, digits and '_'")
        refusal = build_env_refusal(key)
        if refusal:
            v.fail(f"build_env.{key}", f"may not be set by a recipe: {refusal}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            v.fail(f"build_env.{key}", f"must be a string, got {_typename(value)}")
        env_items.append((key, str(value)))

    bytecode = v.string(data, "bytecode") or "alongside"
    if bytecode not in BYTECODE_MODES:
        v.fail("bytecode", f"invalid value {bytecode!r}; valid: {', '.join(BYTECODE_MODES)}{closest(bytecode, BYTECODE_MODES)}")
    slim = data.get("slim", True)
    if not isinstance(slim, bool):
        v.fail("slim", f"must be true or false, got {_typename(slim)}")

    return Recipe(
        name=name,
        packages=tuple(packages),
        python=tuple(dict.fromkeys(norm_py)),
        architectures=tuple(dict.fromkeys(norm_arch)),
        description=description,
        license=license_,
        exclude=tuple(exclude),
        index_url=index_url,
        extra_index_urls=tuple(extra),
        imports=tuple(imports),
        backend=backend,
        image=image,
        system_packages=tuple(system_packages),
        libs=tuple(libs),
        build_env=tuple(sorted(env_items)),
        bytecode=bytecode,
        slim=slim,
        path=path,
    )


def recipe_path(name_or_path: str, recipes_dir: Path | None = None) -> Path:
    """A recipe name in recipes/ or a path to a YAML file."""
    recipes_dir = recipes_dir or RECIPES_DIR
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            what = "not a regular file (a directory, device or pipe)" if candidate.exists() else "no such recipe file"
            raise RecipeError(f"{name_or_path}: {what}")
        return candidate
    path = recipes_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        names = list_recipe_names(recipes_dir)
        raise RecipeError(
            f"no recipe named {name_or_path!r} in {recipes_dir}{closest(name_or_path, names)}; "
            f"available: {', '.join(names) or 'none'}"
        )
    return path


def list_recipe_names(recipes_dir: Path | None = None) -> list[str]:
    recipes_dir = recipes_dir or RECIPES_DIR
    return sorted(p.stem for p in recipes_dir.glob("*.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently).

    Keys brought in by a merge (`<<: *defaults`) may be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    first = seen.get(key)
                    seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {str(key)!r} (first given at line {first}); give each key once",
                        key_node.start_mark)  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def load_recipe(name_or_path: str, recipes_dir: Path | None = None) -> Recipe:
    path = recipe_path(name_or_path, recipes_dir)
    source = str(path)
    try:
        text = read_capped_text(path, RECIPE_MAX_BYTES, "recipe", RecipeError)
    except OSError as exc:
        raise RecipeError(f"{source}: cannot read recipe: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{source}: not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date no calendar has: `2024-13-45` is a YAML timestamp
        raise RecipeError(f"{source}: not valid YAML: {exc} (quote the value to keep it a string)") from None
    return parse_recipe(data, source, path.resolve())
