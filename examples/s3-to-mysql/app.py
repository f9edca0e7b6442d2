"""S3 Put -> Secrets Manager -> MySQL: record every uploaded object in a table.

Lambda runs handler(event, context) for each S3 ObjectCreated notification. The object key arrives
URL-encoded ("my photo.jpg" as "my+photo.jpg"), so it is decoded with unquote_plus. The database's
address and credentials come from a Secrets Manager secret (the JSON shape RDS uses) named by the
DB_SECRET_ID environment variable. boto3 is the Lambda runtime's own; pymysql comes from the layer
(recipe.yaml).
"""

import json
import os
from urllib.parse import unquote_plus

import boto3
import pymysql

INSERT = ("INSERT INTO uploads (bucket, object_key, size, etag, event_time) "
          "VALUES (%s, %s, %s, %s, %s)")

# Created once per execution environment (init), reused by every invocation it serves.
secrets = boto3.client("secretsmanager")
_connection = None


def connect():
    """A connection to the database the secret describes, opened once and reopened when it was closed."""
    global _connection
    if _connection is None or not _connection.open:
        secret = json.loads(secrets.get_secret_value(SecretId=os.environ["DB_SECRET_ID"])["SecretString"])
        _connection = pymysql.connect(host=secret["host"], port=int(secret.get("port", 3306)), user=secret["username"],
                                      password=secret["password"], database=secret["dbname"], charset="utf8mb4",
                                      connect_timeout=5, autocommit=True)
    return _connection


def handler(event, context):
    rows = []
    for record in event["Records"]:
        s3 = record["s3"]
        rows.append((s3["bucket"]["name"], unquote_plus(s3["object"]["key"]), s3["object"].get("size", 0),
                     s3["object"].get("eTag"), record.get("eventTime")))
    with connect().cursor() as cursor:
        cursor.executemany(INSERT, rows)
    print(f"recorded {len(rows)} upload(s)")  # goes to the function's log
    return {"inserted": len(rows), "keys": [row[1] for row in rows]}
