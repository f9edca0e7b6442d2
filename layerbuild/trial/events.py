"""Sample events in the shape Lambda delivers them (`layerbuild event KIND ...`).

A small registry: each kind names its options and a pure builder; add a kind by registering one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import quote_plus

from layerbuild.errors import LayerbuildError
from layerbuild.model.regions import check_region


@dataclass(frozen=True)
class EventKind:
    name: str
    summary: str
    build: Callable[..., dict]


EVENTS: dict[str, EventKind] = {}


def register(name: str, summary: str):
    def wrap(builder):
        EVENTS[name] = EventKind(name, summary, builder)
        return builder

    return wrap


def s3_key_in_event(key: str) -> str:
    """S3 URL-encodes object keys in event notifications: a space becomes '+', '/' stays."""
    return quote_plus(key, safe="/")


@register("s3-put", "S3 ObjectCreated:Put notification for one object")
def s3_put(bucket: str, key: str, size: int = 1024, region: str = "us-east-1", now: datetime | None = None) -> dict:
    if not bucket:
        raise LayerbuildError("--bucket: a bucket name is required")
    if not key:
        raise LayerbuildError("--key: an object key is required")
    if size < 0:
        raise LayerbuildError(f"--size {size}: an object size is a whole number of bytes >= 0")
    region = check_region(region)
    now = now or datetime.now(timezone.utc)
    # Deterministic stand-ins for values S3 computes: the same inputs give the same event.
    digest = hashlib.md5(f"{bucket}/{key}/{size}".encode(), usedforsecurity=False).hexdigest()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": digest[:16].upper(), "x-amz-id-2": digest},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "layerbuild-sample",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": s3_key_in_event(key),
                        "size": size,
                        "eTag": digest,
                        "sequencer": f"{int(now.timestamp() * 1000):016X}",
                    },
                },
            }
        ]
    }
