"""`layerbuild cache info|prune`: what the build cache holds, and bounding it."""

from __future__ import annotations

import time

import click

from layerbuild.cache import builds as cache
from layerbuild.cache import prune as cacheprune
from layerbuild.cli.output import echo_json


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


@click.group("cache")
def cache_group():
    """Inspect or prune the build cache ($XDG_CACHE_HOME/layerbuild: builds/, downloaded wheels/, bytecode/,
    the runtimes' own packages in runtime-sdk/)."""


@cache_group.command("info")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
def info_cmd(json_output):
    """Where the cache is, how many entries, how large, and the automatic size cap."""
    root = cache.cache_root()
    everything = cacheprune.list_entries(root)
    entries = [e for e in everything if e.kind == "build"]
    wheels = [e for e in everything if e.kind == "wheel"]
    packs = [e for e in everything if e.kind == "bytecode"]
    sdks = [e for e in everything if e.kind == "runtime-sdk"]
    from layerbuild.cache.bytecode import module_count

    modules = sum(module_count(e.directory) if e.directory.suffix == cacheprune.PACK_SUFFIX else 1 for e in packs)
    cap = cacheprune.configured_max_size()
    data = {
        "path": str(root),
        "entries": len(entries),
        "bytes": sum(e.size for e in entries),
        "wheels_path": str(cacheprune.wheel_root(root)),
        "wheels": len(wheels),
        "wheel_bytes": sum(e.size for e in wheels),
        "bytecode_path": str(cacheprune.bytecode_root(root)),
        "bytecode_packs": len(packs),  # one per build that compiled anything: what prune removes
        "bytecode_modules": modules,
        "bytecode_bytes": sum(e.size for e in packs),
        "runtime_sdk_path": str(cacheprune.runtime_sdk_root(root)),
        "runtime_sdks": [e.key for e in sdks],  # the runtimes' own packages, one folder per runtime's lock
        "runtime_sdk_bytes": sum(e.size for e in sdks),
        "max_bytes": cap,  # for builds, wheels, bytecode and runtime packages together
        "oldest_use": min((e.last_used for e in everything), default=None),
        "newest_use": max((e.last_used for e in everything), default=None),
    }
    if json_output:
        echo_json(data)
        return
    click.echo(f"path:     {root}")
    click.echo(f"entries:  {len(entries)} ({_megabytes(data['bytes'])})")
    click.echo(f"wheels:   {len(wheels)} ({_megabytes(data['wheel_bytes'])}) in {data['wheels_path']}")
    click.echo(f"bytecode: {modules} modules in {len(packs)} packs ({_megabytes(data['bytecode_bytes'])}) in {data['bytecode_path']}")
    click.echo(f"runtime packages: {len(sdks)} ({_megabytes(data['runtime_sdk_bytes'])}) in {data['runtime_sdk_path']}")
    click.echo(f"max size: {_megabytes(cap) if cap is not None else 'off'} for all four ({cacheprune.MAX_SIZE_ENV})")
    if everything:
        age_days = (time.time() - data["oldest_use"]) / 86400
        click.echo(f"least recently used: {age_days:.1f} days ago")


@cache_group.command("prune")
@click.option("--max-size", help="Remove least recently used entries until the cache fits, e.g. 2GiB or 500MB.")
@click.option("--older-than", help="Remove entries unused for longer than this, e.g. 30d, 12h.")
@click.option("--all", "everything", is_flag=True, help="Empty the cache.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
def prune_cmd(max_size, older_than, everything, json_output):
    """Remove cache entries (zips already in dist/ are never touched).

    Without options: cut the cache back to LAYERBUILD_CACHE_MAX_SIZE, as every build does.
    """
    if everything and (max_size or older_than):
        raise cacheprune.CacheSettingError("--all empties the cache: give it alone, or use --max-size/--older-than")
    size = cacheprune.parse_size(max_size, "--max-size") if max_size is not None else None
    age = cacheprune.parse_age(older_than, "--older-than") if older_than is not None else None
    if not everything and size is None and age is None:
        size = cacheprune.configured_max_size()
    report = cacheprune.prune(max_size=size, older_than=age, everything=everything)
    if json_output:
        echo_json(report.to_dict())
        return
    click.echo(f"removed {len(report.removed)} entries ({_megabytes(report.freed_bytes)}); "
               f"kept {report.kept} ({_megabytes(report.kept_bytes)})"
               + (f"; removed {len(report.leftovers)} leftovers of interrupted stores" if report.leftovers else "")
               + (f"; removed {len(report.links)} symbolic link(s) without following them" if report.links else ""))  # fmt: skip
