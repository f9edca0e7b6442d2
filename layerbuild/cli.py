"""The `layerbuild` command line (click). Errors are caught here, once.

Each command lives with the code it drives; this module wires them together and turns
LayerbuildError into a one-line message and exit status 1 (click's usage errors exit 2).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from . import __version__
from .errors import LayerbuildError


class LayerbuildGroup(click.Group):
    """Catches LayerbuildError once for every command: one line on stderr, exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LayerbuildError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
            if os.environ.get("LAYERBUILD_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                "set LAYERBUILD_DEBUG=1 for the traceback and report it",
                err=True,
            )
            sys.exit(70)


@click.group(cls=LayerbuildGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="layerbuild")
def main():
    """Build AWS Lambda layers that work on their target runtime, audit and publish them."""


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    """An aligned plain-text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    click.echo(fmt.format(*headers).rstrip())
    for row in rows:
        click.echo(fmt.format(*[str(c) for c in row]).rstrip())


# Commands live in their own modules and are registered here.
from .commands.core import build_cmd, list_cmd, lock_cmd, targets_cmd  # noqa: E402

for _command in (targets_cmd, list_cmd, lock_cmd, build_cmd):
    main.add_command(_command)

from .commands.runtime import event_cmd, invoke_cmd, test_cmd  # noqa: E402

for _command in (test_cmd, event_cmd, invoke_cmd):
    main.add_command(_command)

from .commands.audit import audit_cmd, stack_cmd  # noqa: E402

for _command in (audit_cmd, stack_cmd):
    main.add_command(_command)

from .commands.klayers import klayers_lookup_cmd, resolve_cmd  # noqa: E402

for _command in (klayers_lookup_cmd, resolve_cmd):
    main.add_command(_command)

from .commands.publish import publish_cmd  # noqa: E402

main.add_command(publish_cmd)

from .commands.cache import cache_group  # noqa: E402

main.add_command(cache_group)
