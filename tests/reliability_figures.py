"""Reliability figures: what the fault-injection suite tried, and what it lost.

Loaded from conftest.py (``pytest_plugins``). Tests call ``count(kind, n)``; at the end of the
session one summary line is printed and written as JSON to tests/.figures/reliability.json
(git-ignored by a .gitignore the plugin writes beside it; override with
LAYERBUILD_FIGURES_FILE). "artifacts lost or corrupted" and "secrets leaked" must stay 0: tests that detect a broken
artifact or a printed or stored secret record it here *and* fail (``scan_for_secrets``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

KINDS = {
    "bad_inputs": "bad inputs tried",
    "faults": "faults injected",
    "interrupted_builds": "interrupted builds",
    "artifacts_lost_or_corrupted": "artifacts lost or corrupted",
    "secret_scans": "outputs scanned for secrets",
    "secrets_leaked": "secrets leaked",
}
FIGURES_FILE = Path(__file__).resolve().parent / ".figures" / "reliability.json"

_counts: Counter = Counter()
_details: Counter = Counter()


def count(kind: str, n: int = 1, detail: str | None = None) -> None:
    """Record n events of a kind (one of KINDS); detail breaks it down (e.g. 'hostile zips')."""
    if kind not in KINDS:
        raise ValueError(f"unknown figure {kind!r}; valid: {', '.join(KINDS)}")
    _counts[kind] += n
    if detail:
        _details[f"{kind}: {detail}"] += n


def scan_for_secrets(text: str, secrets, where: str) -> None:
    """Count one scanned output; record and fail if any of `secrets` appears in it."""
    count("secret_scans")
    leaked = [s for s in secrets if s and s in text]
    if leaked:
        count("secrets_leaked")
        raise AssertionError(f"{where} contains a secret ({len(leaked)} of {len(secrets)} markers)")


def figures() -> dict:
    return {
        **{kind: _counts[kind] for kind in KINDS},
        "breakdown": dict(sorted(_details.items())),
    }


def summary_line(data: dict) -> str:
    return "reliability: " + ", ".join(f"{data[k]} {label}" for k, label in KINDS.items())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not any(_counts.values()):
        return  # none of the reliability tests ran
    data = figures()
    terminalreporter.write_sep("-", "reliability figures")
    terminalreporter.write_line(summary_line(data))
    path = Path(os.environ.get("LAYERBUILD_FIGURES_FILE") or FIGURES_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path == FIGURES_FILE:
            (path.parent / ".gitignore").write_text("*\n", encoding="utf-8")
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        terminalreporter.write_line(f"reliability figures written to {path}")
    except OSError as exc:  # a read-only checkout must not fail the run
        terminalreporter.write_line(f"reliability figures not written: {exc}")
