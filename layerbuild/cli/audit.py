"""audit and stack: check layer zips against their target runtime and against each other."""

from __future__ import annotations

from pathlib import Path

import click

from layerbuild.audit.facts import audit_target, audit_zip, stack_layer
from layerbuild.audit.integrity import vet_layer_zip
from layerbuild.audit.rules import render_report
from layerbuild.audit.stack import render_stack, simulate_stack
from layerbuild.cli.output import echo_json
from layerbuild.util.integrity import check_crcs
from layerbuild.verify.runtimesdk import shipped_versions

ZIP = click.Path(dir_okay=False, path_type=Path)



@click.command("audit")
@click.argument("zip_path", metavar="ZIP", type=ZIP)
@click.option("--python", "python", default=None, help="Target Python version (default: from the manifest beside the zip).")
@click.option("--arch", default=None, help="Target architecture, x86_64 or arm64 (default: from the manifest).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable report on stdout.")
def audit_cmd(zip_path, python, arch, json_output):
    """Check that the layer ZIP will load on its target runtime (exit 1 on errors).

    Every member's CRC and the sha256 recorded in the manifest beside the zip are checked first."""
    target = audit_target(zip_path, python, arch)
    vet_layer_zip(zip_path)  # every member's CRC, and the manifest's sha256 beside the zip
    report = audit_zip(zip_path, target)
    if json_output:
        echo_json(report.to_dict())
    else:
        click.echo(render_report(report, str(zip_path)))
    if not report.ok:
        raise SystemExit(1)


@click.command("stack")
@click.argument("zip_paths", metavar="ZIP [ZIP ...]", nargs=-1, required=True, type=ZIP)
@click.option("--function", "function_zip", type=ZIP, default=None, help="The function's own zip (counts towards the size limit).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable report on stdout.")
def stack_cmd(zip_paths, function_zip, json_output):
    """Simulate Lambda's /opt merge of the layer ZIPs in order (later wins); exit 1 if Lambda would refuse it."""
    names = [p.name for p in zip_paths]
    labels = [p.name if names.count(p.name) == 1 else str(p) for p in zip_paths]
    layers = [stack_layer(path, label) for path, label in zip(zip_paths, labels)]
    function = stack_layer(function_zip) if function_zip else None
    for path in [*zip_paths, *([function_zip] if function_zip else [])]:
        check_crcs(path)  # a damaged member would make the merge's view a lie
    report = simulate_stack(layers, function, shipped_versions())
    if json_output:
        echo_json(report.to_dict())
    else:
        click.echo(render_stack(report))
    if not report.ok:
        raise SystemExit(1)
