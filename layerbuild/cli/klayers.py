"""Klayers commands: klayers-lookup, resolve, and the --prefer-klayers build path."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from layerbuild.build.parallel import TargetFailures
from layerbuild.cli.output import echo_json, print_table
from layerbuild.errors import KlayersError, KlayersNotFound, LockError, TargetError
from layerbuild.klayers.client import KlayersClient, describe_age
from layerbuild.klayers.client import api_url as klayers_api_url
from layerbuild.klayers.model import (
    KlayersTarget,
    Lookup,
    history_rows,
    klayers_target,
    select,
)
from layerbuild.klayers.plan import MAX_LAYERS, TargetPlan, plan_target, shadowed
from layerbuild.limits import LOCK_MAX_BYTES, read_capped_text
from layerbuild.model.lockfile import parse_lock, requirements_digest
from layerbuild.model.recipe import Recipe, load_recipe
from layerbuild.model.regions import check_region
from layerbuild.model.runtimes import Target
from layerbuild.publish.snippets import render_arns
from layerbuild.util.safetext import printable

OUTPUT_FORMATS = ("table", "arns", "sam", "terraform")



def client_options(func):
    """--api-url, --offline, --cache-ttl: how Klayers is reached (shared by the Klayers commands)."""

    @click.option("--api-url", default=None, metavar="URL",
                  help="Klayers API base URL (default $LAYERBUILD_KLAYERS_URL or https://api.klayers.cloud).")
    @click.option("--offline", is_flag=True, help="Answer from the cache only (says how old the answer is).")
    @click.option("--cache-ttl", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                  help="How long cached answers stay fresh (default $LAYERBUILD_KLAYERS_TTL or 6 hours).")
    @functools.wraps(func)
    def wrapper(*args, api_url, offline, cache_ttl, **kwargs):
        client = KlayersClient(api_url, ttl=cache_ttl, offline=offline)
        return func(*args, client=client, **kwargs)

    return wrapper


def _note_cache(answer, client: KlayersClient) -> None:
    if answer.from_cache and client.offline:
        click.echo(f"offline: answer from the cache, fetched {describe_age(answer.age)} ago ({answer.url})", err=True)


def _render(fmt: str, layers) -> str:
    """arns: one ARN a line; sam/terraform: the publish command's snippets, each ARN noted with its package."""
    comments = {layer.arn: f"{layer.package} {layer.version}" for layer in layers}
    return render_arns([layer.arn for layer in layers], fmt, comments)


# -- klayers-lookup --------------------------------------------------------------------------------
@click.command("klayers-lookup")
@click.argument("region")
@click.argument("pyver")
@click.argument("packages", nargs=-1)
@click.option("--arch", default="x86_64", show_default=True, help="x86_64 or arm64 (arm64 selects p3.X-arm64 listings).")
@click.option("--history", "history_of", default=None, metavar="PACKAGE",
              help="List every layer version of PACKAGE, deprecated ones with their expiry.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default="table", show_default=True,
              help="table; arns (one ARN a line); sam or terraform snippets.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@client_options
def klayers_lookup_cmd(region, pyver, packages, arch, history_of, fmt, json_output, client):
    """Klayers' public layers in REGION for PYVER (p3.12, 3.12 or python3.12), or only PACKAGEs.

    Exit status 0 when every PACKAGE has a layer, 1 when some are missing (listed on stderr).
    """
    region = check_region(region)
    target = klayers_target(pyver, arch)
    if history_of:
        if packages:
            raise click.UsageError("give either PACKAGE arguments or --history PACKAGE, not both")
        return _history(client, target, region, history_of, fmt, json_output)
    answer = client.latest(target, region)
    _note_cache(answer, client)
    lookup = select(answer.layers, list(packages))
    _print_lookup(lookup, answer, target, region, fmt, json_output, asked=bool(packages))
    if not lookup.complete:
        raise click.exceptions.Exit(1)


def _print_lookup(lookup: Lookup, answer, target: KlayersTarget, region: str, fmt: str, json_output: bool, asked: bool):
    if json_output:
        echo_json({
            "region": region, "python": target.segment, "layers": [layer.to_dict() for layer in lookup.found],
            "missing": lookup.missing, "source": answer.url, "from_cache": answer.from_cache,
            "age_seconds": round(answer.age, 3),
        })  # fmt: skip
    elif fmt == "table":
        if lookup.found:
            print_table([[layer.package, layer.version, layer.arn] for layer in lookup.found],
                               ["PACKAGE", "VERSION", "ARN"])  # fmt: skip
        elif not asked:
            click.echo(f"Klayers lists no layers for {target.segment} in {region}", err=True)
    elif lookup.found:
        click.echo(_render(fmt, lookup.found).rstrip("\n"))
    if lookup.missing:
        click.echo(printable(f"missing: {', '.join(lookup.missing)} (Klayers has no {target.segment} layer in {region})"), err=True)


def _history(client, target, region, package, fmt, json_output):
    answer = client.history(target, region, package)
    if not answer.layers:
        # The API keys history by Klayers' own spelling (Pillow, not pillow): find it in the listing.
        listed = select(client.latest(target, region).layers, [package]).found
        if listed and listed[0].package != package:
            package = listed[0].package
            answer = client.history(target, region, package)
    _note_cache(answer, client)
    rows = history_rows(answer.layers)
    if json_output:
        echo_json({"region": region, "python": target.segment, "package": package,
                          "versions": [layer.to_dict() for layer in rows], "source": answer.url,
                          "from_cache": answer.from_cache, "age_seconds": round(answer.age, 3)})  # fmt: skip
    elif fmt == "table" and rows:
        print_table(
            [[layer.version, layer.layer_version or "", layer.status + (f" (expires {layer.expiry})" if layer.status == "deprecated" and layer.expiry else ""), layer.arn] for layer in rows],
            ["VERSION", "LAYER", "STATUS", "ARN"],
        )  # fmt: skip
    elif rows and fmt != "table":
        click.echo(_render(fmt, rows).rstrip("\n"))
    if not rows:
        click.echo(printable(f"missing: {package} (Klayers has no {target.segment} layer in {region})"), err=True)
        raise click.exceptions.Exit(1)


# -- resolve ---------------------------------------------------------------------------------------
def committed_pins(recipe: Recipe, target: Target) -> tuple[dict[str, str] | None, str | None]:
    """The committed lock's pins for target (None without a lock) and a note when it is stale."""
    path = recipe.lock_path(target)
    if not path.is_file():
        return None, None
    try:
        lock = parse_lock(read_capped_text(path, LOCK_MAX_BYTES, "lock", LockError))
    except OSError as exc:
        raise LockError(f"{path}: cannot read lock: {exc}") from None
    if lock.requirements_sha256 != requirements_digest(recipe):
        return None, f"{path}: lock is stale (run 'layerbuild lock {recipe.name}'); its pins were not applied"
    return lock.pins, None


def plan_recipe(recipe: Recipe, region: str, client: KlayersClient, pythons=None, arches=None) -> list[TargetPlan]:
    region = check_region(region)
    plans = []
    for target in recipe.targets(pythons or None, arches or None):
        notes = []
        try:
            ktarget = klayers_target(target.python, target.arch)
        except TargetError:  # a target Klayers does not publish for: everything is built
            layers = None
        else:
            try:
                answer = client.latest(ktarget, region)
                layers = answer.layers
                if answer.from_cache and client.offline:
                    notes.append(f"offline: Klayers answer from the cache, fetched {describe_age(answer.age)} ago")
            except KlayersNotFound as exc:  # the API's way of saying "nothing here": build it all
                layers = None
                notes.append(f"Klayers has no {ktarget.segment} listing in {region} ({exc})")
        pins, note = committed_pins(recipe, target)
        plan = plan_target(recipe.requirements, target, layers, pins)
        plan.notes.extend(notes + ([note] if note else []))
        plans.append(plan)
    return plans


def _print_plans(plans: list[TargetPlan], region: str) -> None:
    rows = []
    for plan in plans:
        for item in plan.covered:
            rows.append([plan.target.slug, item.requirement, "klayers", f"{item.layer.package} {item.layer.version}  {item.layer.arn}"])
        for item in plan.remaining:
            rows.append([plan.target.slug, item.requirement, "build", item.reason])
    print_table(rows, ["TARGET", "REQUIREMENT", "SOURCE", "DETAIL"])
    for plan in plans:
        own = " + own layer" if plan.remaining else ""
        click.echo(f"{plan.target.slug} in {region}: {len(plan.covered)} Klayers layer(s){own} = {plan.layer_count} of {MAX_LAYERS}")
        for note in plan.notes:
            click.echo(f"  note: {note}")


@click.command("resolve")
@click.argument("recipe")
@click.option("--region", required=True, help="AWS region whose Klayers layers to use, e.g. us-east-1.")
@click.option("--python", "pythons", multiple=True, help="Only this Python version (repeatable), e.g. 3.12.")
@click.option("--arch", "arches", multiple=True, help="Only this architecture (repeatable): x86_64, arm64.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@client_options
def resolve_cmd(recipe, region, pythons, arches, json_output, client):
    """Which of RECIPE's requirements a Klayers layer covers per target, and what remains to build."""
    loaded = load_recipe(recipe)
    region = check_region(region)
    plans = plan_recipe(loaded, region, client, pythons, arches)
    if json_output:
        echo_json({"recipe": loaded.name, "region": region, "targets": [p.to_dict() for p in plans]})
    else:
        _print_plans(plans, region)


# -- build --prefer-klayers ------------------------------------------------------------------------
def remainder_recipe(recipe: Recipe, plan: TargetPlan) -> Recipe:
    """The recipe narrowed to what Klayers does not cover, under the same name (same zip name).

    The remainder's requirements carry the committed lock's pins, and the narrowed recipe points
    at no lock of its own: the committed lock covers the whole recipe, not this subset.
    """
    virtual = None
    if recipe.path:
        virtual = recipe.path.parent / f".{recipe.name}.klayers-remainder" / recipe.path.name
    return dataclasses.replace(recipe, packages=plan.remaining_packages, imports=(), path=virtual)


def build_with_klayers(recipes: list[Recipe], region: str, api_url: str | None, pythons, arches, backend: str,
                       out_dir: Path, image: str | None, json_output: bool, use_cache: bool, progress,
                       verify: bool = True, verify_with: str | None = None) -> None:  # fmt: skip
    from layerbuild.build.pipeline import (
        build_recipes,  # late: keeps `klayers-lookup` free of the build machinery
    )

    client = KlayersClient(klayers_api_url(api_url, "--klayers-url"))
    results, failures = [], []
    for recipe in recipes:
        for plan in plan_recipe(recipe, region, client, pythons, arches):
            outcome = None
            if plan.remaining:
                try:
                    outcome = build_recipes([remainder_recipe(recipe, plan)], [plan.target.python], [plan.target.arch],
                                            backend, out_dir, image, progress=progress, use_cache=use_cache,
                                            verify=verify, verify_with=verify_with)[0]  # fmt: skip
                except TargetFailures as exc:
                    failures.append(exc)
                    continue
                own = [p.name for p in outcome.manifest.packages]
                _add_bundled_dependencies(plan, client, region)
                overlap = shadowed(plan, own)
                if overlap:
                    plan.notes.append(
                        f"shadowing: the own layer also ships {', '.join(overlap)}, which a Klayers layer provides; "
                        "attached last, its copy wins at run time"
                    )
            results.append((recipe, plan, outcome))
    if json_output:
        echo_json([_result_dict(recipe, plan, outcome) for recipe, plan, outcome in results])
    else:
        for recipe, plan, outcome in results:
            _print_result(recipe, plan, outcome, region)
    if failures:
        raise failures[0]


def _add_bundled_dependencies(plan: TargetPlan, client: KlayersClient, region: str) -> None:
    """Fill in what each covering Klayers layer bundles (the latest listing omits it; the history has it)."""
    ktarget = klayers_target(plan.target.python, plan.target.arch)
    for index, item in enumerate(plan.covered):
        if item.layer.dependencies:
            continue
        try:
            versions = client.history(ktarget, region, item.layer.package).layers
        except KlayersError as exc:  # only the shadowing check suffers: say so, keep going
            plan.notes.append(f"could not read what {item.layer.package}'s Klayers layer bundles: {exc}")
            continue
        same = [v for v in versions if v.arn == item.layer.arn]
        if same and same[0].dependencies:
            plan.covered[index] = dataclasses.replace(item, layer=dataclasses.replace(item.layer, dependencies=same[0].dependencies))


def _result_dict(recipe: Recipe, plan: TargetPlan, outcome) -> dict:
    stack = list(plan.arns) + ([str(outcome.zip_path)] if outcome else [])
    return {"recipe": recipe.name, **plan.to_dict(), "build": outcome.to_dict() if outcome else None, "stack": stack}


def _print_result(recipe: Recipe, plan: TargetPlan, outcome, region: str) -> None:
    slug = f"{recipe.name} {plan.target.slug}"
    if outcome is None:
        click.echo(f"{slug}: every requirement is covered by Klayers in {region}; nothing built")
    else:
        m = outcome.manifest
        pkgs = ", ".join(f"{p.name}=={p.version}" for p in m.packages)
        click.echo(f"{slug}: {outcome.status} {outcome.zip_path}  {m.zipped_bytes:,} bytes  [{pkgs}]")
    if plan.arns:
        click.echo(f"  attach in this order ({plan.layer_count} of {MAX_LAYERS} layers):")
        for arn in plan.arns:
            click.echo(f"    {arn}")
        if outcome is not None:
            click.echo(f"    {outcome.zip_path} (this recipe's layer, last)")
    for note in plan.notes:
        click.echo(f"  note: {note}")


def check_region_option(region):
    if region is None:
        raise click.UsageError("--prefer-klayers needs --region (the region whose Klayers layers to use)")
    return check_region(region)


__all__ = ["klayers_lookup_cmd", "resolve_cmd", "build_with_klayers", "plan_recipe", "KlayersError"]
