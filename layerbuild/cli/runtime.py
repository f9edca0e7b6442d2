"""Runtime commands: test (import smoke test), event (sample events), invoke (run a handler locally)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from layerbuild.audit.facts import audit_target, manifest_beside
from layerbuild.cli.output import echo_json
from layerbuild.errors import LayerbuildError
from layerbuild.trial import events
from layerbuild.trial.invoke import DEFAULT_TIMEOUT, InvokeSpec, invoke
from layerbuild.trial.smoketest import DEFAULT_TIMEOUT as IMPORT_TIMEOUT
from layerbuild.trial.smoketest import MODES, render, smoke_test

ZIP = click.Path(dir_okay=False, path_type=Path)



@click.command("test")
@click.argument("zip_path", metavar="ZIP", type=ZIP)
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Module to import (repeatable; default: the recipe's imports:, else the distributions' top-level modules).")
@click.option("--python", "python", default=None, help="Target Python version (default: from the manifest beside the zip).")
@click.option("--arch", default=None, help="Target architecture, x86_64 or arm64 (default: from the manifest).")
@click.option("--image", default=None, help="Runtime image (default: $LAYERBUILD_RUNTIME_IMAGE, else public.ecr.aws/lambda/python:X.Y-ARCH).")
@click.option("--where", "mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="docker: only in the runtime image; local: only with a local pythonX.Y; auto: docker if it answers.")
@click.option("--timeout", type=click.FloatRange(min=1), default=IMPORT_TIMEOUT, show_default=True, help="Seconds before the import run is stopped.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable report on stdout.")
def test_cmd(zip_path, imports, python, arch, image, mode, timeout, json_output):
    """Import every top-level module of the layer ZIP in its target runtime, read-only at /opt.

    Exit status: 0 all imports pass, 1 an import failed (or bad input), 3 the target cannot be tested here.
    """
    target = audit_target(zip_path, python, arch)
    manifest = manifest_beside(zip_path)
    if manifest is not None and (manifest.python, manifest.architecture) != (target.python, target.arch):
        raise LayerbuildError(f"{zip_path} is built for python{manifest.python} {manifest.architecture} (its manifest), "
                              f"not {target.runtime.name} {target.arch}: Lambda would refuse it there; test it as built, "
                              f"or build it for {target.slug}")  # fmt: skip
    report = smoke_test(zip_path, target, imports, mode, image, timeout)
    if json_output:
        echo_json(report.to_dict())
    else:
        click.echo(render(report))
    if not report.ok:
        raise SystemExit(1)


@click.group("event", invoke_without_command=False)
def event_cmd():
    """Print a sample event in the shape Lambda delivers it (JSON on stdout)."""


@event_cmd.command("s3-put")
@click.option("--bucket", required=True, help="Bucket name.")
@click.option("--key", required=True, help="Object key as stored (the event carries it URL-encoded, as S3 sends it).")
@click.option("--size", type=click.IntRange(min=0), default=1024, show_default=True, help="Object size in bytes.")
@click.option("--region", default="us-east-1", show_default=True, help="AWS region of the bucket.")
def s3_put_cmd(bucket, key, size, region):
    """S3 ObjectCreated:Put for one object."""
    click.echo(json.dumps(events.EVENTS["s3-put"].build(bucket=bucket, key=key, size=size, region=region), indent=2))


@click.command("invoke")
@click.argument("handler")
@click.option("--layer", "layers", multiple=True, type=ZIP, help="Layer zip, in the order the function lists them (later wins).")
@click.option("--event", "event_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Event JSON file.")
@click.option("--code", "code_dir", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The function's code directory (where the handler module is).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds the handler may run (Lambda's default is 3).")
@click.option("--function-name", default="layerbuild-local", show_default=True)
@click.option("--memory", "memory_mb", type=int, default=128, show_default=True, help="memory_limit_in_mb on the context.")
@click.option("--python", "python", default=None, help="Python version (default: from the first layer's manifest, else this one's).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="An environment variable for the handler (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Variables in the shape of sam local invoke --env-vars: {"Parameters": {...}} or {"FUNCTION": {...}}.')
@click.option("--region", default=None, help="AWS_REGION for the handler (default: your AWS configuration's, else us-east-1).")
@click.option("--profile", default=None, help="Take the credentials handed to the handler from this AWS profile.")
@click.option("--no-credentials", is_flag=True, help="Hand the handler no AWS credentials at all.")
def invoke_cmd(handler, layers, event_path, code_dir, timeout, function_name, memory_mb, python, env, env_file, region,
               profile, no_credentials):  # fmt: skip
    """Run HANDLER (module.function) with the layers stacked on sys.path as Lambda does, then the runtime's own
    packages (boto3 ...); print its return value as JSON.

    The handler gets Lambda's variables, --env/--env-file, the AWS credentials of the standard chain (environment,
    --profile, config files, SSO; never printed) and this shell's AWS_ENDPOINT_URL* and proxy settings. Handler
    errors and timeouts print Lambda's errorMessage/errorType JSON and exit 1.
    """
    if profile and no_credentials:
        raise click.UsageError("--profile and --no-credentials contradict each other")
    result = invoke(InvokeSpec(handler, tuple(layers), event_path, code_dir, timeout, function_name, memory_mb, python,
                               region, env=tuple(env), env_file=env_file, credentials=not no_credentials,
                               profile=profile))  # fmt: skip
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.logs:
        click.echo(result.logs.rstrip("\n"), err=True)
    click.echo(json.dumps(result.payload, indent=2, sort_keys=True, ensure_ascii=False))
    if not result.ok:
        raise SystemExit(1)
