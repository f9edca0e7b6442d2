"""Core commands: targets, list, lock, build."""

from __future__ import annotations

from pathlib import Path

import click

from layerbuild.build.parallel import TargetFailures
from layerbuild.build.pipeline import DEFAULT_OUT_DIR, build_recipes, lock_recipe
from layerbuild.build.verifystep import VERIFY_WITH, verified_label
from layerbuild.cli.output import echo_json, print_table
from layerbuild.model.recipe import BACKENDS, list_recipe_names, load_recipe
from layerbuild.model.runtimes import matrix_rows
from layerbuild.util.safetext import printable


def _progress(json_output: bool):
    def report(target, message):
        click.echo(f"[{target.slug}] {printable(message)}", err=True)  # notes name files from wheels

    return report


@click.command("targets")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
def targets_cmd(json_output):
    """Show the Lambda Python runtime matrix (OS, glibc, wheel tags, images)."""
    rows = matrix_rows()
    if json_output:
        echo_json(rows)
        return
    table = []
    for row in rows:
        tags = row["platform_tags"]
        table.append([row["runtime"], row["architecture"], row["os"], row["glibc"],
                      row["status"] + (f" ({row['deprecation_date']})" if row["status"] == "deprecated" else ""),
                      f"{tags[0]} .. {tags[-1]}", row["build_image"]])  # fmt: skip
    print_table(table, ["RUNTIME", "ARCH", "OS", "GLIBC", "STATUS", "WHEEL TAGS", "BUILD IMAGE"])


@click.command("list")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
def list_cmd(json_output):
    """List the recipes in recipes/."""
    recipes = [load_recipe(name) for name in list_recipe_names()]
    if json_output:
        echo_json([r.to_dict() for r in recipes])
        return
    print_table(
        [[r.name, ", ".join(r.python), ", ".join(r.architectures), ", ".join(r.packages), r.description] for r in recipes],
        ["NAME", "PYTHON", "ARCH", "PACKAGES", "DESCRIPTION"],
    )


@click.command("lock")
@click.argument("recipe")
@click.option("--python", "pythons", multiple=True, help="Only this Python version (repeatable).")
@click.option("--arch", "arches", multiple=True, help="Only this architecture (repeatable).")
def lock_cmd(recipe, pythons, arches):
    """Pin RECIPE's requirements with hashes for each target (recipes/NAME.lock/)."""
    loaded = load_recipe(recipe)
    for path in lock_recipe(loaded, pythons or None, arches or None, progress=_progress(False)):
        click.echo(str(path))


@click.command("build")
@click.argument("recipe", required=False)
@click.option("--all", "build_all", is_flag=True, help="Build every recipe in recipes/ (instead of RECIPE).")
@click.option("--no-cache", is_flag=True, help="Rebuild even when an identical build is in the cache.")
@click.option("--python", "pythons", multiple=True, help="Only this Python version (repeatable), e.g. 3.12.")
@click.option("--arch", "arches", multiple=True, help="Only this architecture (repeatable): x86_64, arm64.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="wheels: no Docker; docker: compile in the Lambda build image; auto: wheels when possible.")
@click.option("--image", default=None, help="Docker backend: build image to use instead of the default.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT_DIR,
              show_default=True, help="Output directory.")  # fmt: skip
@click.option("--json", "json_output", is_flag=True, help="Machine-readable results on stdout.")
@click.option("--prefer-klayers", is_flag=True,
              help="Reuse Klayers' public layers where they satisfy the recipe; build only the rest (needs --region).")
@click.option("--region", default=None, help="--prefer-klayers: the AWS region whose Klayers layers to use.")
@click.option("--klayers-url", default=None, metavar="URL",
              help="--prefer-klayers: Klayers API base URL (default $LAYERBUILD_KLAYERS_URL or the public API).")
@click.option("--no-verify", is_flag=True,
              help="Do not import the built layer on the target's Python (the manifest says it was not verified).")
@click.option("--verify-with", type=click.Choice(VERIFY_WITH), default=None,
              help="Verify only this way: a local pythonX.Y, QEMU with LAYERBUILD_SYSROOT_ARM64/_X86_64, or the "
                   "runtime image in Docker (default: the first of these that works).")
def build_cmd(recipe, pythons, arches, backend, image, out_dir, json_output, build_all, no_cache,
              prefer_klayers=False, region=None, klayers_url=None, no_verify=False, verify_with=None):
    """Build RECIPE (a name in recipes/ or a YAML path), or every recipe with --all, into layer zips.

    The targets build concurrently; unchanged targets come from the build cache (`cached`). Every layer is
    verified before it reaches the output directory: its modules are imported on the target's Python.
    """
    if build_all == bool(recipe):
        raise click.UsageError("give either a RECIPE or --all" if not build_all else "give a RECIPE or --all, not both")
    if (region or klayers_url) and not prefer_klayers:
        raise click.UsageError("--region and --klayers-url only apply with --prefer-klayers")
    if no_verify and verify_with:
        raise click.UsageError("--verify-with and --no-verify contradict each other")
    loaded = [load_recipe(name) for name in list_recipe_names()] if build_all else [load_recipe(recipe)]
    if prefer_klayers:  # layerbuild/commands/klayers.py: plan per target, build only the remainder
        from layerbuild.cli.klayers import build_with_klayers, check_region_option

        build_with_klayers(loaded, check_region_option(region), klayers_url, pythons, arches, backend, out_dir, image,
                           json_output, not no_cache, _progress(json_output), not no_verify, verify_with)  # fmt: skip
        return
    failed = None
    try:
        outcomes = build_recipes(loaded, pythons or None, arches or None, backend, out_dir, image,
                                 progress=_progress(json_output), use_cache=not no_cache, verify=not no_verify,
                                 verify_with=verify_with)  # fmt: skip
    except TargetFailures as exc:  # print what was built, then fail with every error
        outcomes, failed = exc.outcomes, exc
    if json_output:
        echo_json([o.to_dict() for o in outcomes])
    else:
        for outcome in outcomes:
            m = outcome.manifest
            pkgs = ", ".join(f"{p.name}=={p.version}" for p in m.packages)
            click.echo(printable(f"{outcome.status}: {outcome.zip_path}  {m.zipped_bytes:,} bytes  sha256 {m.sha256[:16]}  "
                                 f"[{pkgs}]  {verified_label(m)}"))  # package names come from the wheels' METADATA
    if failed:
        raise failed
