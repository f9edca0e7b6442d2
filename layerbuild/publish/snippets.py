"""ARNs in the forms users paste: plain lines, a SAM/CloudFormation `Layers:` list, Terraform. Pure."""

from __future__ import annotations

from layerbuild.errors import LayerbuildError

FORMATS = ("arn", "sam", "terraform")
_ALIASES = {"arns": "arn", "plain": "arn", "cloudformation": "sam", "cfn": "sam", "tf": "terraform"}


class SnippetFormatError(LayerbuildError, ValueError):
    """An output format render_arns does not know."""


def normalise_format(fmt: str) -> str:
    value = _ALIASES.get(fmt.lower(), fmt.lower())
    if value not in FORMATS:
        raise SnippetFormatError(f"unknown snippet format {fmt!r}; valid: {', '.join(FORMATS)}")
    return value


def render_arns(arns, fmt: str, comments: dict[str, str] | None = None) -> str:
    """Render ARNs (a list, or a mapping whose values are ARNs) for pasting.

    comments maps an ARN to a short note (its region, its package) shown where the format allows.
    """
    items = list(arns.values()) if isinstance(arns, dict) else list(arns)
    comments = comments or {}
    fmt = normalise_format(fmt)
    if fmt == "arn":
        return "\n".join(items) + ("\n" if items else "")
    if fmt == "sam":
        lines = ["Layers:"]
        for arn in items:
            note = f"  # {comments[arn]}" if arn in comments else ""
            lines.append(f"  - {arn}{note}")
        return "\n".join(lines) + "\n" if items else "Layers: []\n"
    lines = ["layers = ["]
    for arn in items:
        note = f"  # {comments[arn]}" if arn in comments else ""
        lines.append(f'  "{arn}",{note}')
    lines.append("]")
    return "\n".join(lines) + "\n"
