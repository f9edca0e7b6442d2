"""`layerbuild publish`: a built zip (or a recipe, built first) to one or many regions."""

from __future__ import annotations

from pathlib import Path

import click

from layerbuild.build.pipeline import DEFAULT_OUT_DIR, build_recipe
from layerbuild.cli.output import echo_json, print_table
from layerbuild.model.recipe import load_recipe
from layerbuild.model.runtimes import check_architecture, normalise_python
from layerbuild.publish.aws import load_built_layer, publish_layer
from layerbuild.publish.plan import (
    PublishError,
    check_s3,
    dry_run_plan,
    layer_to_publish,
    make_options,
)
from layerbuild.publish.snippets import render_arns
from layerbuild.publish.vet import vet_for_publish
from layerbuild.util.safetext import printable

FORMATS = ("table", "arn", "sam", "terraform")



def default_regions() -> list[str]:
    import boto3

    region = boto3.session.Session().region_name
    if not region:
        raise PublishError("no region: pass --region REGION (repeatable) or set AWS_REGION / a profile region")
    return [region]


def check_zip_matches(zip_path: Path, manifest, pythons, arches) -> None:
    """--python/--arch with a ZIP must describe that zip: publishing it under another runtime would lie."""
    wanted_py = {normalise_python(p) for p in pythons}
    wanted_arch = {check_architecture(a) for a in arches}
    if wanted_py and manifest.python not in wanted_py:
        raise PublishError(f"--python {', '.join(sorted(wanted_py))}: {zip_path.name} was built for Python {manifest.python}")
    if wanted_arch and manifest.architecture not in wanted_arch:
        raise PublishError(f"--arch {', '.join(sorted(wanted_arch))}: {zip_path.name} was built for {manifest.architecture}")


def built_layers(target: str, pythons, arches, out_dir: Path, layer_name: str | None) -> list[tuple[Path, object]]:
    """(zip, manifest) pairs: the zip given, or every target of the recipe, built now."""
    if target.endswith(".zip") or Path(target).is_file():
        zip_path = Path(target)
        manifest = load_built_layer(zip_path)
        check_zip_matches(zip_path, manifest, pythons, arches)
        return [(zip_path, manifest)]
    recipe = load_recipe(target)
    targets = recipe.targets(pythons or None, arches or None)
    if layer_name and len(targets) > 1:  # before building: the answer is already known
        raise PublishError(f"--layer-name names one layer but {target} has {len(targets)} targets "
                           f"({', '.join(t.slug for t in targets)}); narrow with --python/--arch")  # fmt: skip
    outcomes = build_recipe(recipe, pythons or None, arches or None, out_dir=out_dir,
                            progress=lambda t, m: click.echo(printable(f"[{t.slug}] {m}"), err=True))  # fmt: skip
    return [(o.zip_path, o.manifest) for o in outcomes]


@click.command("publish")
@click.argument("target", metavar="RECIPE|ZIP")
@click.option("--region", "regions", multiple=True, help="Region to publish to (repeatable); default: boto3's region.")
@click.option("--layer-name", default=None, help="Layer name (default NAME-pyXY-ARCH).")
@click.option("--share", "shares", multiple=True, metavar="SPEC",
              help="Grant use: public, account:123456789012, org:o-abc123defg (repeatable).")
@click.option("--s3-bucket", default=None, help="Bucket for layers over 50 MB; '{region}' is replaced per region.")
@click.option("--force", is_flag=True, help="Publish a new version even when the newest has the same content.")
@click.option("--dry-run", is_flag=True, help="Print what would be called; change nothing (makes no AWS calls).")
@click.option("--python", "pythons", multiple=True, help="With a RECIPE: only this Python version.")
@click.option("--arch", "arches", multiple=True, help="With a RECIPE: only this architecture.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT_DIR, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table, or the ARNs as plain lines, a SAM Layers: list, a Terraform layers list.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable results.")
def publish_cmd(target, regions, layer_name, shares, s3_bucket, force, dry_run, pythons, arches, out_dir, fmt, json_output):
    """Publish a built layer ZIP (with its manifest), or build RECIPE and publish every target."""
    options = make_options(regions or default_regions(), shares, s3_bucket, force, dry_run)
    layers_built = built_layers(target, pythons, arches, out_dir, layer_name)
    layers = [layer_to_publish(zip_path, manifest, layer_name) for zip_path, manifest in layers_built]
    for layer in layers:  # the vetting and audit of `audit`, before any AWS call
        vet_for_publish(layer.zip_path, layer.manifest)
    for layer in layers:
        check_s3(layer, options)

    if dry_run:
        plan = [step for layer in layers for step in dry_run_plan(layer, options)]
        if json_output:
            echo_json(plan)
            return
        for step in plan:
            click.echo(printable(f"[{step['region']}] {step['layer_name']} ({step['zip']})"))
            params = {k: v for k, v in step["parameters"].items()}
            for key in sorted(params):
                click.echo(printable(f"    {key}: {params[key]}"))
            for call in step["calls"]:
                click.echo(f"    would call {call}")
        click.echo("dry run: nothing was called", err=True)
        return

    results = []
    for layer in layers:
        results += publish_layer(layer, options, progress=lambda region, message, n=layer.layer_name: click.echo(printable(f"[{region}] {n}: {message}"), err=True))

    if json_output:
        echo_json([r.to_dict() for r in results])
    elif fmt == "table":
        print_table([[r.region, r.layer_name, r.version or "-", r.status, r.arn or r.reason] for r in results],
                           ["REGION", "LAYER", "VERSION", "STATUS", "ARN / REASON"])  # fmt: skip
    else:
        arns = [r.arn for r in results if r.arn]
        click.echo(render_arns(arns, fmt, {r.arn: r.region for r in results if r.arn}), nl=False)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise PublishError(f"{len(failed)} of {len(results)} publications failed: "
                           + "; ".join(f"{r.region} ({r.layer_name}): {r.reason}" for r in failed))  # fmt: skip
