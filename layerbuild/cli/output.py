"""What commands print: JSON documents and aligned plain-text tables (cells escaped)."""

from __future__ import annotations

import json

import click

from layerbuild.util.safetext import printable


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    """An aligned plain-text table. Cells are escaped (printable): they hold what servers answered."""
    rows = [[printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    click.echo(fmt.format(*headers).rstrip())
    for row in rows:
        click.echo(fmt.format(*[str(c) for c in row]).rstrip())
