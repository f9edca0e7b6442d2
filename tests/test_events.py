"""`layerbuild event`: sample events in the shape Lambda delivers them."""

import json
from datetime import datetime, timezone
from urllib.parse import unquote_plus

from hypothesis import given
from hypothesis import strategies as st

from layerbuild.trial.events import EVENTS, s3_key_in_event, s3_put


def test_s3_put_shape_matches_lambda(invoke):
    result = invoke("event", "s3-put", "--bucket", "photos", "--key", "2024/red flower.jpg", "--size", "42", "--region", "eu-west-1")
    assert result.exit_code == 0, result.stderr
    event = json.loads(result.stdout)
    [record] = event["Records"]
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["eventVersion"] == "2.1" and record["awsRegion"] == "eu-west-1"
    assert datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert record["s3"]["bucket"] == {"name": "photos", "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": "arn:aws:s3:::photos"}
    obj = record["s3"]["object"]
    assert obj["key"] == "2024/red+flower.jpg"
    assert obj["size"] == 42 and len(obj["eTag"]) == 32 and obj["sequencer"]
    assert unquote_plus(obj["key"]) == "2024/red flower.jpg"


def test_keys_are_encoded_like_s3():
    assert s3_key_in_event("red flower.jpg") == "red+flower.jpg"
    assert s3_key_in_event("a/b c/d.txt") == "a/b+c/d.txt"
    assert s3_key_in_event("1+1=2.txt") == "1%2B1%3D2.txt"
    assert s3_key_in_event("café.png") == "caf%C3%A9.png"


@given(st.text(min_size=1, max_size=60))
def test_decoding_the_key_gives_it_back(key):
    assert unquote_plus(s3_key_in_event(key)) == key


def test_same_inputs_same_event():
    now = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
    first = s3_put("b", "k", 10, "us-east-1", now)
    assert first == s3_put("b", "k", 10, "us-east-1", now)
    assert first["Records"][0]["eventTime"] == "2024-05-01T12:00:00.123Z"


def test_registry_lists_kinds():
    assert "s3-put" in EVENTS and EVENTS["s3-put"].build is s3_put


def test_unknown_region_is_one_line_error(invoke):
    result = invoke("event", "s3-put", "--bucket", "b", "--key", "k", "--region", "us-east-9")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown AWS region 'us-east-9'") and result.stderr.count("\n") == 1
    assert not result.stdout


def test_empty_key_and_negative_size_are_refused(invoke):
    result = invoke("event", "s3-put", "--bucket", "b", "--key", "")
    assert result.exit_code == 1 and "error: --key: an object key is required" in result.stderr
    result = invoke("event", "s3-put", "--bucket", "b", "--key", "k", "--size", "-1")
    assert result.exit_code == 2 and "--size" in result.stderr


def test_missing_bucket_and_unknown_kind_are_usage_errors(invoke):
    result = invoke("event", "s3-put", "--key", "k")
    assert result.exit_code == 2 and "--bucket" in result.stderr
    result = invoke("event", "sqs-message")
    assert result.exit_code == 2 and "sqs-message" in result.stderr
