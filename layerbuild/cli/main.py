"""The `layerbuild` command line (click). Errors are caught here, once.

Each command lives with the code it drives; this module wires them together and turns
LayerbuildError into a one-line message and exit status 1 (click's usage errors exit 2).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from layerbuild import __version__
from layerbuild.errors import LayerbuildError
from layerbuild.util.safetext import printable


class LayerbuildGroup(click.Group):
    """Catches LayerbuildError once for every command: one line on stderr, exit 1. Commands are
    imported on first use (LAZY_COMMANDS)."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(self.commands) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            module, attribute = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(f"layerbuild.cli.{module}"), attribute), name)
        return self.commands.get(name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LayerbuildError as exc:
            click.echo(f"error: {printable(exc)}", err=True)  # names, paths and reasons from outside, escaped
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            _forget_unhandled_interrupt()
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
            if isinstance(exc, BrokenPipeError) and _stdout_is_gone():
                raise  # `layerbuild ... | head`: click's standalone mode ends quietly, as Unix tools do
            if os.environ.get("LAYERBUILD_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"error: internal error ({type(exc).__name__}: {printable(' '.join(str(exc).split()))}); "
                "set LAYERBUILD_DEBUG=1 for the traceback and report it",
                err=True,
            )
            sys.exit(70)


def _forget_unhandled_interrupt() -> None:
    """Keep exit status 130 after a Ctrl-C we handled.

    CPython marks a KeyboardInterrupt that ends an exec() of a string as unhandled even when it is
    caught later (dataclasses and namedtuple build their methods that way, so Ctrl-C lands there
    now and then); under `python -m` the process then ends by SIGINT once it has exited. Every
    exec() of a string clears that mark first, so an empty one clears it.
    """
    exec("pass")


def _stdout_is_gone() -> bool:
    """Whether the reader of our standard output went away (a broken pipe elsewhere is a bug to report).

    A pipe whose reading end is closed polls as an error on its writing end."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file behind stdout, or no poll(): not ours to judge
        return False


@click.group(cls=LayerbuildGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="layerbuild")
def main():
    """Build AWS Lambda layers that work on their target runtime, audit and publish them."""


# Commands live in their own modules, imported only when asked for: `layerbuild build` on an
# unchanged target is a cache hit, and importing publish/invoke/klayers code for it would cost
# more than the hit itself.
LAZY_COMMANDS = {
    "targets": ("core", "targets_cmd"),
    "list": ("core", "list_cmd"),
    "lock": ("core", "lock_cmd"),
    "build": ("core", "build_cmd"),
    "test": ("runtime", "test_cmd"),
    "event": ("runtime", "event_cmd"),
    "invoke": ("runtime", "invoke_cmd"),
    "audit": ("audit", "audit_cmd"),
    "stack": ("audit", "stack_cmd"),
    "klayers-lookup": ("klayers", "klayers_lookup_cmd"),
    "resolve": ("klayers", "resolve_cmd"),
    "publish": ("publish", "publish_cmd"),
    "cache": ("cache", "cache_group"),
}

