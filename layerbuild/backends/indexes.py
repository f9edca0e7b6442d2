"""Where packages come from: the recipe's index settings, shared by both backends, and local file:// indexes
(a PEP 503 tree or a flat directory of wheels)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from layerbuild.errors import ResolveError

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DISTRIBUTION_SUFFIXES = (".whl", ".tar.gz", ".zip")


def local_path(url: str) -> Path | None:
    """Pure: the directory a file:// URL names; None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(url2pathname(parts.path))


def is_find_links_directory(url: str) -> bool:
    """A file:// URL naming a directory that holds distribution files directly (not a PEP 503 tree)."""
    folder = local_path(url)
    if folder is None:
        return False
    try:
        return any(entry.is_file() and entry.name.endswith(DISTRIBUTION_SUFFIXES) for entry in os.scandir(folder))
    except OSError:
        return False


@dataclass(frozen=True)
class IndexSettings:
    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()

    @classmethod
    def for_recipe(cls, recipe) -> "IndexSettings":
        # Recipe first, then the user's own settings, then PyPI.
        return cls(recipe.index_url or cls.from_environment().index_url, tuple(recipe.extra_index_urls))

    @classmethod
    def from_environment(cls) -> "IndexSettings":
        """The user's own index (a mirror, a proxy), else PyPI."""
        return cls(os.environ.get("LAYERBUILD_INDEX_URL") or os.environ.get("UV_INDEX_URL")
                   or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL)  # fmt: skip

    def args(self) -> list[str]:
        """uv's index options. A file:// URL naming a directory of distribution files (not a PEP 503 tree) is
        a find-links location for uv; when the recipe's index is one, the first other index takes its place
        (or none: --no-index)."""
        urls = [self.index_url, *self.extra_index_urls]
        for url in urls:
            folder = local_path(url)
            if folder is not None and not folder.is_dir():  # uv would only say the packages were not found
                raise ResolveError(f"index {url}: {folder} is not a directory (a local index is a directory of wheels "
                                   f"or a PEP 503 tree with PROJECT/index.html)")  # fmt: skip
        flat = [url for url in urls if is_find_links_directory(url)]
        indexes = [url for url in urls if url not in flat]
        out = ["--index-url", indexes[0]] if indexes else ["--no-index"]
        for extra in indexes[1:]:
            out += ["--extra-index-url", extra]
        for location in flat:
            out += ["--find-links", location]
        return out
