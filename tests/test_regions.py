"""layerbuild.model.regions: the known-region list and its one-line errors."""

import boto3
import pytest

from layerbuild.errors import LayerbuildError, TargetError
from layerbuild.model.regions import REGIONS, check_region


def test_regions_are_unique_well_formed_and_cover_klayers():
    assert len(REGIONS) == len(set(REGIONS))
    for region in REGIONS:
        parts = region.split("-")
        assert len(parts) == 3 and parts[0].isalpha() and parts[2].isdigit(), region
    # The regions Klayers serves for python3.12 (shared/reference/lambda.md).
    klayers = ["af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-south-1",
               *[f"ap-southeast-{n}" for n in range(1, 6)], "ca-central-1", "eu-central-1", "eu-north-1",
               "eu-south-1", "eu-west-1", "eu-west-2", "eu-west-3", "me-south-1", "sa-east-1",
               "us-east-1", "us-east-2", "us-west-1", "us-west-2"]  # fmt: skip
    assert set(klayers) <= set(REGIONS)


def test_regions_are_lambda_regions_botocore_knows():
    # botocore's bundled endpoint data (no network): every region we accept has a Lambda endpoint.
    # (Not equality: a newer botocore listing a brand-new region must not break CI.)
    botocore_regions = set(boto3.session.Session().get_available_regions("lambda", partition_name="aws"))
    unknown = set(REGIONS) - botocore_regions
    assert not unknown, f"not Lambda regions for botocore: {sorted(unknown)}"
    assert {"ap-east-2", "ap-southeast-6", "ap-southeast-7", "mx-central-1"} <= set(REGIONS)  # the 2025 launches


@pytest.mark.parametrize("value,expected", [
    ("us-east-1", "us-east-1"), (" EU-West-1 ", "eu-west-1"), ("ap-southeast-7", "ap-southeast-7"),
])  # fmt: skip
def test_check_region_accepts_and_normalises(value, expected):
    assert check_region(value) == expected


@pytest.mark.parametrize("value,message", [
    ("us-eats-1", "unknown AWS region 'us-eats-1' (did you mean 'us-east-1'?); known regions: af-south-1, "),
    ("eu-wset-2", "(did you mean 'eu-west-2'?)"),
    ("mars-1", "unknown AWS region 'mars-1'; known regions: "),
    ("", "unknown AWS region ''"),
    ("cn-north-1", "unknown AWS region 'cn-north-1'"),
])  # fmt: skip
def test_unknown_region_is_a_one_line_error_with_suggestion(value, message):
    with pytest.raises(TargetError) as caught:
        check_region(value)
    text = caught.value.message
    assert message in text and "\n" not in text
    assert isinstance(caught.value, LayerbuildError) and text.endswith("us-west-2")
