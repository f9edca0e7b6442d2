"""layerbuild.publish.snippets: ARNs rendered in the forms users paste."""

import pytest
import yaml

from layerbuild.errors import LayerbuildError
from layerbuild.publish.snippets import FORMATS, normalise_format, render_arns

ARNS = {
    "us-east-1": "arn:aws:lambda:us-east-1:123456789012:layer:pymysql-py312-x86_64:3",
    "eu-west-1": "arn:aws:lambda:eu-west-1:123456789012:layer:pymysql-py312-x86_64:1",
}


def test_arn_format_is_one_per_line_in_order():
    assert render_arns(list(ARNS.values()), "arn") == "\n".join(ARNS.values()) + "\n"
    assert render_arns(ARNS, "arn") == render_arns(list(ARNS.values()), "arn")  # a region -> ARN mapping too
    assert render_arns([], "arn") == ""


def test_sam_snippet_is_yaml_with_a_layers_list():
    text = render_arns(ARNS, "sam", comments={arn: region for region, arn in ARNS.items()})
    assert text.splitlines() == [
        "Layers:",
        f"  - {ARNS['us-east-1']}  # us-east-1",
        f"  - {ARNS['eu-west-1']}  # eu-west-1",
    ]
    assert yaml.safe_load(text) == {"Layers": list(ARNS.values())}  # comments do not leak into the values
    assert yaml.safe_load(render_arns([], "sam")) == {"Layers": []}


def test_terraform_snippet_is_a_layers_list():
    text = render_arns(list(ARNS.values()), "terraform")
    assert text == f'layers = [\n  "{ARNS["us-east-1"]}",\n  "{ARNS["eu-west-1"]}",\n]\n'
    noted = render_arns(ARNS, "terraform", comments={ARNS["eu-west-1"]: "PyMySQL 1.1.1"})
    assert f'  "{ARNS["eu-west-1"]}",  # PyMySQL 1.1.1' in noted.splitlines()
    assert render_arns([], "terraform") == "layers = [\n]\n"


@pytest.mark.parametrize("alias,fmt", [
    ("arn", "arn"), ("ARNS", "arn"), ("plain", "arn"), ("sam", "sam"), ("cloudformation", "sam"), ("cfn", "sam"),
    ("terraform", "terraform"), ("tf", "terraform"),
])  # fmt: skip
def test_format_aliases(alias, fmt):
    assert normalise_format(alias) == fmt and fmt in FORMATS


def test_unknown_format_is_a_one_line_layerbuild_error():
    with pytest.raises(LayerbuildError) as caught:
        render_arns(list(ARNS.values()), "pulumi")
    assert caught.value.message == "unknown snippet format 'pulumi'; valid: arn, sam, terraform"
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError keep working
