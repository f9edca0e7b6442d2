"""What a Python module refers to, read off its text: imports, dynamic imports of literal names, names and
paths in string literals.

Pure functions over text. No ast: parsing every module that needs a look in a large layer costs
seconds, these scans milliseconds (every pattern starts with a literal, which the regex engine
finds fast). The scan over-approximates on purpose: an import statement inside a docstring or a
comment counts too, so slimming, which keeps whatever is referred to, keeps more, never less.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The keyword of every import statement; what stands before it on its line says which kind it is.
_IMPORT_WORD = re.compile(r"import\b[ \t]*(\([^)]*\)|[^\n;#]*)")
_FROM_BEFORE = re.compile(r"(?:^|[;:])[ \t]*from[ \t]+([\w.]+)[ \t]+$")
_PLAIN_BEFORE = re.compile(r"(?:^|[;:])[ \t]*$")
_CONTINUATION = re.compile(r"\\\r?\n")
# importlib.import_module(...) and __import__(...): the text of their arguments up to the closing parenthesis.
_DYNAMIC = re.compile(r"(?:import_module|__import__)[ \t]*\(([^()]*(?:\([^()]*\)[^()]*)*)\)")
# A one-line string literal, with its prefix (r, b, f, u and their pairs).
_STRING = re.compile(r"""([rRbBuUfF]{0,2})(['"])((?:\\.|(?!\2)[^\\\n])*)\2""")
# Placeholders of f-strings that name the module or its package.
_OWN_NAME = ("{__name__}",)
_OWN_PACKAGE = ("{__package__}", "{__spec__.parent}")
# What makes the string literals of a statement paths relative to the module's own folder:
# os.path.join(os.path.dirname(__file__), "data", "x.json"), pkgutil.get_data(__name__, "tests/x.json"),
# importlib.resources.files(__package__) / "docs", Path(__file__).parent / "templates", here / "x".
PATH_WORDS = ("__file__", "__path__", "get_data", "resources", "files(", "joinpath", "open_text", "read_text",
              "open_binary", "read_binary", "as_file", "path.join", '/ "', "/ '", '/"', "/'")  # fmt: skip
_MAX_STATEMENT_LINES = 40


@dataclass(frozen=True)
class ModuleRefs:
    imports: frozenset[str]  # absolute module names the module imports (or may: `from a import b` gives a and a.b)
    dynamic: tuple[str, ...]  # literal prefixes of imports whose name is computed at run time ("" when none is known)
    strings: frozenset[str]  # dotted names in string literals, and string literals used as paths (path_strings)


def package_of(rel: str) -> str:
    """pkg/mod.py and pkg/__init__.py alike -> pkg (the package relative imports start from)."""
    return ".".join(rel.split("/")[:-1])


def module_name(rel: str) -> str:
    """pkg/mod.py -> pkg.mod; pkg/__init__.py -> pkg; pkg/tests -> pkg.tests."""
    parts = (rel[: -len(".py")] if rel.endswith(".py") else rel).split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def absolute(name: str, package: str) -> str:
    """An import's absolute name: `..x` from package a.b.c is a.b.x."""
    if not name.startswith("."):
        return name
    dots = len(name) - len(name.lstrip("."))
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (dots - 1)] if dots - 1 <= len(parts) else []
    rest = name[dots:]
    return ".".join(base + ([rest] if rest else []))


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _names(text: str) -> list[str]:
    """`a.b as c, d` or `(x as y,\n z)` -> [a.b, d] / [x, z]; comments dropped."""
    text = "\n".join(line.split("#")[0] for line in text.splitlines())
    return [item.split(" as ")[0].strip() for item in text.strip("()\n \t").replace("\n", " ").split(",")]


def static_imports(rel: str, text: str) -> set[str]:
    """Absolute names the import statements of a module (rel = its path under site) name: `import a.b`,
    `from a import b` (a, and a.b, which may be a submodule), relative ones resolved; also after `;` or
    `:` (`try: import x`) and across backslash continuations."""
    if "\\\n" in text:
        text = _CONTINUATION.sub(" ", text)
    package = package_of(rel)
    found: set[str] = set()
    for match in _IMPORT_WORD.finditer(text):
        start = match.start()
        if start and (text[start - 1].isalnum() or text[start - 1] in "_."):
            continue  # import_module, reimport, importlib.import...
        line_start = text.rfind("\n", 0, start) + 1
        before = text[line_start:start]
        imported = match.group(1)
        source = _FROM_BEFORE.search(before)
        if source:
            base = absolute(source.group(1), package)
            if base:
                found.add(base)
            for item in _names(imported):
                if item and item != "*" and item.isidentifier():
                    found.add(f"{base}.{item}" if base else item)
        elif _PLAIN_BEFORE.search(before):
            found.update(n for n in _names(imported) if _is_dotted_name(n))
    return found


def _literal(argument: str) -> tuple[str, str, bool] | None:
    """(prefix, text, whole) of a string literal at the start of an argument (whole: nothing follows it)."""
    argument = argument.strip()
    match = _STRING.match(argument)
    return (match.group(1).lower(), match.group(3), match.end() == len(argument)) if match else None


def dynamic_imports(rel: str, text: str) -> tuple[set[str], list[str]]:
    """import_module("x") / __import__("x") of literal names (relative ones resolved against a literal,
    __name__ or __package__ anchor), and the literal prefixes of those whose name is computed
    ("pkg.plugins" for import_module("pkg.plugins." + name); "" when nothing of it is known)."""
    if "import_module" not in text and "__import__" not in text:
        return set(), []
    own, package = module_name(rel), package_of(rel)
    if rel.endswith("__init__.py"):
        package = own
    found: set[str] = set()
    computed: list[str] = []
    for arguments in _DYNAMIC.findall(text):
        parts = [a.strip() for a in arguments.split(",")]
        first = _literal(parts[0]) if parts and parts[0] else None
        if first is None:
            computed.append("")
            continue
        prefix, name, whole = first
        if "f" in prefix:
            for placeholder in _OWN_NAME:
                name = name.replace(placeholder, own)
            for placeholder in _OWN_PACKAGE:
                name = name.replace(placeholder, package)
            if "{" in name:
                name, whole = name.split("{", 1)[0], False
        if "%" in name:
            name, whole = name.split("%", 1)[0], False
        if name.startswith("."):
            anchor = _anchor(parts[1:], own, package)
            if anchor is None:
                computed.append("")
                continue
            name = absolute(name, anchor)  # import_module(".x", "a.b") is a.b.x
        if whole and _is_dotted_name(name):
            found.add(name)
        else:
            computed.append(name.rstrip("."))
    return found, computed


def _anchor(arguments: list[str], own: str, package: str) -> str | None:
    """The package argument of import_module(".x", package): a literal, __name__ or __package__."""
    for argument in arguments:
        value = argument.split("=", 1)[1].strip() if argument.startswith("package") else argument
        if value == "__name__":
            return own
        if value in ("__package__", "__spec__.parent"):
            return package
        literal = _literal(value)
        if literal is not None and literal[2] and "f" not in literal[0]:
            return literal[1]
    return None


def string_literals(text: str) -> set[str]:
    return {match.group(3) for match in _STRING.finditer(text) if match.group(3)}


def dotted_strings(text: str, words) -> set[str]:
    """String literals that look like module names and contain one of words as a part
    (importlib.resources.files("pkg.tests.data"), a plugin table): found from each word outwards."""
    found: set[str] = set()
    for word in words:
        start = text.find(word)
        while start != -1:
            end = start + len(word)
            left, right = start, end
            while left > 0 and (text[left - 1].isalnum() or text[left - 1] in "_."):
                left -= 1
            while right < len(text) and (text[right].isalnum() or text[right] in "_."):
                right += 1
            name = text[left:right]
            if left > 0 and right < len(text) and text[left - 1] in "'\"" and text[right] == text[left - 1]:
                if "." in name and _is_dotted_name(name) and word in name.split("."):
                    found.add(name)
            start = text.find(word, max(end, right))
    return found


def path_strings(text: str) -> set[str]:
    """String literals of the statements that build a path from the module's own location or read a
    package resource (PATH_WORDS), a statement being its line and, while brackets stay open, the next ones.
    Doctest lines (>>>, ...) are examples in docstrings, not code that runs: skipped."""
    starts = set()
    for word in PATH_WORDS:
        at = text.find(word)
        while at != -1:
            starts.add(text.rfind("\n", 0, at) + 1)
            at = text.find(word, at + len(word))
    found: set[str] = set()
    done = -1  # statements already read reach up to here
    for start in sorted(starts):
        if start <= done:
            continue
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        line = text[start:end]
        if line.lstrip().startswith((">>>", "...")):
            continue
        depth, lines = _depth(line), 1
        while depth > 0 and end < len(text) and lines < _MAX_STATEMENT_LINES:
            following = text.find("\n", end + 1)
            following = len(text) if following == -1 else following
            depth += _depth(text[end + 1 : following])
            end, lines = following, lines + 1
        found |= string_literals(text[start:end])
        done = end
    return found


def _depth(line: str) -> int:
    return line.count("(") + line.count("[") + line.count("{") - line.count(")") - line.count("]") - line.count("}")


def scan(rel: str, text: str, words=()) -> ModuleRefs:
    """Everything a module refers to by name; dotted names in strings only when they contain one of words."""
    literal, computed = dynamic_imports(rel, text)
    dotted = dotted_strings(text, words)
    return ModuleRefs(frozenset(static_imports(rel, text) | literal | dotted), tuple(computed),
                      frozenset(dotted | path_strings(text)))  # fmt: skip


def mentions_word(text: str, word: str) -> bool:
    """Whether word appears in text as a whole identifier (str.find: a regex with \\b is 5x slower here)."""
    start = text.find(word)
    while start != -1:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            return True
        start = text.find(word, end)
    return False
