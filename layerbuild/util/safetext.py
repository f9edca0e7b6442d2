"""Text and JSON from outside, made safe to show and to parse.

printable(): what a zip entry name, an HTTP reason phrase, a module name or an error message
carries is shown as written, except characters that would act on the terminal instead of being
shown (ESC sequences that set the title or move the cursor, BEL, DEL, C1 controls, bidi overrides
such as U+202E that reorder what follows, other format characters): those are written as Python
escapes (\\x1b, \\u202e). Letters of every script stay as they are.

loads() / read_json(): JSON with a nesting-depth limit (a deeply nested file raises JsonInputError,
never RecursionError), an optional size cap, no NaN/Infinity, and optionally no duplicate keys.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

# Categories shown escaped: controls (C0, DEL, C1), format characters (bidi overrides and isolates,
# zero-width joiners...), line/paragraph separators, surrogates (from undecodable bytes) and private use.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_SAFE_ASCII = frozenset(chr(c) for c in range(0x20, 0x7F))
MAX_JSON_DEPTH = 100  # real manifests nest 3 levels, events about 10; Python's parser gives up near 1,000


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, keep_newlines: bool = False) -> str:
    """str(text) with every character that could act on a terminal written as an escape (\\x1b, \\u202e).
    keep_newlines: '\\n' stays (for text we laid out in lines ourselves)."""
    text = str(text)
    if all(c in _SAFE_ASCII or (keep_newlines and c == "\n") for c in text):
        return text  # the common case, at C speed
    out = []
    for char in text:
        if char in _SAFE_ASCII or (keep_newlines and char == "\n"):
            out.append(char)
        elif ord(char) < 0x80 or unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


class JsonInputError(ValueError):
    """JSON we refuse; the message is a short reason (the caller names the file)."""


def _no_constant(name: str):
    raise JsonInputError(f"{name} is not a JSON value")


def _unique_pairs(pairs: list) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise JsonInputError(f"key {printable(key)!r} appears twice")
        found[key] = value
    return found


def depth_of(value: object, limit: int) -> int:
    """How deep lists and objects nest in value (iteratively; stops counting past limit)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None,
          unique_keys: bool = False) -> object:  # fmt: skip
    """json.loads with limits; JsonInputError (a ValueError) with a one-line reason for anything refused."""
    if max_bytes is not None and len(text) > max_bytes:
        raise JsonInputError(f"larger than {max_bytes:,} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"not UTF-8 (byte {exc.start})") from None
    hook = _unique_pairs if unique_keys else None
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=hook)
    except RecursionError:
        raise JsonInputError(f"nested more than {max_depth} levels deep") from None
    except JsonInputError:
        raise
    except ValueError as exc:
        raise JsonInputError(f"not valid JSON: {printable(str(exc).splitlines()[0][:120])}") from None
    if depth_of(value, max_depth) > max_depth:
        raise JsonInputError(f"nested more than {max_depth} levels deep")
    return value


def read_json(path: Path, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, unique_keys: bool = False) -> object:
    """A JSON file read with at most max_bytes + 1 bytes in memory; OSError as open() raises it."""
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    return loads(raw, max_depth=max_depth, max_bytes=max_bytes, unique_keys=unique_keys)
