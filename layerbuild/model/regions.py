"""AWS regions layerbuild knows: where layers can be published or looked up. Pure data.

The commercial regions with Lambda (the ones Klayers serves, ../shared/reference/lambda.md, plus
the newer opt-in regions; the same set botocore lists for Lambda in the aws partition, checked
by tests/test_regions.py). A value outside the list is a one-line error suggesting the closest.
"""

from __future__ import annotations

from layerbuild.errors import TargetError
from layerbuild.model.runtimes import closest

REGIONS: tuple[str, ...] = (
    "af-south-1",
    "ap-east-1", "ap-east-2",
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-6", "ap-southeast-7",
    "ca-central-1", "ca-west-1",
    "eu-central-1", "eu-central-2",
    "eu-north-1",
    "eu-south-1", "eu-south-2",
    "eu-west-1", "eu-west-2", "eu-west-3",
    "il-central-1",
    "me-central-1", "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
)  # fmt: skip


def check_region(value: str) -> str:
    """The region name, lower-cased and stripped; a clear error for anything unknown."""
    region = str(value).strip().lower()
    if region not in REGIONS:
        raise TargetError(
            f"unknown AWS region {value!r}{closest(region, REGIONS)}; known regions: {', '.join(REGIONS)}"
        )
    return region
