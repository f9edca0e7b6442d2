"""`layerbuild invoke`: handlers run with real layers stacked as Lambda stacks them."""

import json
import os

import pytest
from runtime_layers import build_real_layer, hostile_layer, make_layer

from layerbuild.model.runtimes import RUNTIMES
from layerbuild.trial.invoke import split_handler
from layerbuild.verify.interpreters import find_local_python

needs_py311 = pytest.mark.skipif(find_local_python("3.11", "x86_64") is None, reason="no local python3.11 for x86_64")

S3_HANDLER = '''
from urllib.parse import unquote_plus

import pymysql.converters


def handler(event, context):
    record = event["Records"][0]["s3"]
    key = unquote_plus(record["object"]["key"])
    print("processing", key)
    return {
        "bucket": record["bucket"]["name"],
        "key": key,
        "sql_literal": pymysql.converters.escape_string(key),
        "pymysql_from": pymysql.__file__,
    }
'''

CONTEXT_HANDLER = '''
import os, sys

def handler(event, context):
    names = ["function_name", "function_version", "invoked_function_arn", "memory_limit_in_mb", "aws_request_id",
             "log_group_name", "log_stream_name", "identity", "client_context"]
    values = {n: getattr(context, n) for n in names}
    values["remaining"] = context.get_remaining_time_in_millis()
    values["host_secret"] = os.environ.get("SOME_HOST_SECRET")
    values["env_name"] = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    values["sys_path_head"] = sys.path[:4]
    return values

def slow(event, context):
    import time
    time.sleep(60)

def fails(event, context):
    raise KeyError("missing-thing")

def writes_opt(event, context):
    import shared
    open(os.path.join(os.path.dirname(shared.__file__), "x.txt"), "w").write("x")

def which_layer(event, context):
    import shared
    return shared.WHO

def not_json(event, context):
    return {1, 2}
'''


@pytest.fixture(scope="module")
def pymysql_layer(tmp_path_factory):
    return build_real_layer(tmp_path_factory.mktemp("dist"), "pymysql-invoke", ["pymysql"])


@pytest.fixture
def code(tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "app.py").write_text(S3_HANDLER)
    (folder / "ctx.py").write_text(CONTEXT_HANDLER)
    return folder


@pytest.fixture
def s3_event(invoke, tmp_path):
    result = invoke("event", "s3-put", "--bucket", "uploads", "--key", "reports/Q1 o'brien.csv")
    path = tmp_path / "event.json"
    path.write_text(result.stdout)
    return path


def two_layers(tmp_path):
    first = make_layer(tmp_path / "first.zip", {"python/shared.py": "WHO = 'first'\n", "python/only_first.py": ""})
    second = make_layer(tmp_path / "second.zip", {"python/shared.py": "WHO = 'second'\n"})
    return first, second


@pytest.mark.network
@needs_py311
def test_s3_handler_uses_the_real_layer(invoke, pymysql_layer, code, s3_event):
    result = invoke("invoke", "app.handler", "--layer", pymysql_layer, "--event", s3_event, "--code", code)
    assert result.exit_code == 0, result.stderr
    value = json.loads(result.stdout)
    assert value["bucket"] == "uploads" and value["key"] == "reports/Q1 o'brien.csv"
    assert value["sql_literal"] == "reports/Q1 o\\'brien.csv"
    assert "/opt/python/pymysql/__init__.py" in value["pymysql_from"]  # from the layer, not the host venv
    assert "processing reports/Q1 o'brien.csv" in result.stderr  # prints are logs, not the response


@needs_py311
def test_without_the_layer_the_import_fails_like_lambda(invoke, code, s3_event):
    result = invoke("invoke", "app.handler", "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == "Unable to import module 'app': No module named 'pymysql'"


@needs_py311
def test_context_has_lambdas_attributes(invoke, code, s3_event, monkeypatch):
    monkeypatch.setenv("SOME_HOST_SECRET", "host-only")
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", code, "--python", "3.11",
                    "--function-name", "thumbs", "--memory", "512", "--timeout", "7")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    value = json.loads(result.stdout)
    assert value["function_name"] == "thumbs" and value["function_version"] == "$LATEST"
    assert value["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:thumbs"
    assert value["memory_limit_in_mb"] == 512 and value["log_group_name"] == "/aws/lambda/thumbs"
    assert len(value["aws_request_id"]) == 36 and value["log_stream_name"].count("/") == 3
    assert value["identity"] is None and value["client_context"] is None
    assert 0 < value["remaining"] <= 7000
    assert value["host_secret"] is None and value["env_name"] == "thumbs"  # the shell's own variables stay out
    assert value["sys_path_head"][0] == str(code.resolve())
    assert value["sys_path_head"][1].endswith("/opt/python/lib/python3.11/site-packages")
    assert value["sys_path_head"][2].endswith("/opt/python")
    assert "/runtime-sdk/python3.11-" in value["sys_path_head"][3]  # then the runtime's own packages


ENV_HANDLER = """
import os, sys

def handler(event, context):
    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_SECRETS_MANAGER", "DB_SECRET_ID", "SHARED", "FROM_FILE", "EMPTY", "SOME_HOST_SECRET"]
    seen = {name: os.environ.get(name) for name in names}
    # never echo a secret back: say whether it arrived, and only the public key id
    seen["AWS_SECRET_ACCESS_KEY"] = seen["AWS_SECRET_ACCESS_KEY"] == event.get("expect_secret")
    seen["AWS_SESSION_TOKEN"] = seen["AWS_SESSION_TOKEN"] == event.get("expect_token")
    import boto3
    seen["boto3"] = boto3.__version__
    seen["boto3_from_layer"] = "/opt/python" in boto3.__file__
    return seen
"""


def env_event(tmp_path, **expect):
    path = tmp_path / "env-event.json"
    path.write_text(json.dumps(expect))
    return path


@needs_py311
def test_credentials_of_the_standard_chain_reach_the_handler_and_are_never_printed(invoke, code, tmp_path, monkeypatch):
    (code / "envs.py").write_text(ENV_HANDLER)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-from-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t0ken-from-env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:10")
    monkeypatch.setenv("SOME_HOST_SECRET", "host-only")
    event = env_event(tmp_path, expect_secret="s3cr3t-from-env", expect_token="t0ken-from-env")
    result = invoke("invoke", "envs.handler", "--event", event, "--code", code, "--python", "3.11")
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["AWS_ACCESS_KEY_ID"] == "AKIDFROMENV" and seen["AWS_SECRET_ACCESS_KEY"] is True
    assert seen["AWS_SESSION_TOKEN"] is True
    assert seen["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and seen["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == "http://127.0.0.1:10"
    assert seen["SOME_HOST_SECRET"] is None
    assert seen["boto3"] == RUNTIMES["3.11"].sdk.boto3 and not seen["boto3_from_layer"]  # the runtime's own boto3
    assert "note: AWS credentials from env handed to the handler" in result.stderr
    assert "s3cr3t-from-env" not in result.output and "t0ken-from-env" not in result.output
    # --no-credentials: none at all
    result = invoke("invoke", "envs.handler", "--event", event, "--code", code, "--python", "3.11", "--no-credentials")
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["AWS_ACCESS_KEY_ID"] is None and seen["AWS_SECRET_ACCESS_KEY"] is False


@needs_py311
def test_a_profile_gives_its_credentials_and_region(invoke, code, tmp_path, monkeypatch):
    (code / "envs.py").write_text(ENV_HANDLER)
    (tmp_path / "credentials").write_text("[dev]\naws_access_key_id = AKIDDEVPROFILE\naws_secret_access_key = dev-s3cret\n")
    (tmp_path / "config").write_text("[profile dev]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    event = env_event(tmp_path, expect_secret="dev-s3cret")
    result = invoke("invoke", "envs.handler", "--event", event, "--code", code, "--python", "3.11", "--profile", "dev")
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["AWS_ACCESS_KEY_ID"] == "AKIDDEVPROFILE" and seen["AWS_SECRET_ACCESS_KEY"] is True
    assert seen["AWS_REGION"] == "eu-central-1" and "dev-s3cret" not in result.output
    result = invoke("invoke", "envs.handler", "--event", event, "--code", code, "--python", "3.11", "--profile", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: --profile nope: no such profile in the AWS config or credentials files (profiles there: dev)\n"


@needs_py311
def test_env_options_and_a_sam_env_file(invoke, code, tmp_path):
    (code / "envs.py").write_text(ENV_HANDLER)
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"SHARED": "all", "FROM_FILE": 7},
                                    "upload-fn": {"SHARED": "mine", "DB_SECRET_ID": "from-file"}}))  # fmt: skip
    event = env_event(tmp_path)
    args = ["invoke", "envs.handler", "--event", event, "--code", code, "--python", "3.11", "--no-credentials"]
    result = invoke(*args, "--env-file", env_file, "--function-name", "upload-fn", "--env", "DB_SECRET_ID=db/creds=1",
                    "--env", "EMPTY=")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert (seen["SHARED"], seen["FROM_FILE"], seen["DB_SECRET_ID"], seen["EMPTY"]) == ("mine", "7", "db/creds=1", "")
    # another function's section only: SAM would not apply it, and we say so
    result = invoke(*args, "--env-file", env_file)
    assert result.exit_code == 0 and json.loads(result.stdout)["DB_SECRET_ID"] is None
    assert "has variables for upload-fn but not for 'layerbuild-local' (pass --function-name upload-fn" in result.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--env", "AWS_REGION=eu-west-1", "--env AWS_REGION: AWS_REGION is set by Lambda itself and cannot be set by a function"),
    ("--env", "NOEQUALS", "--env NOEQUALS: expected KEY=VALUE"),
    ("--env", "1BAD=x", "--env 1BAD: '1BAD' is not a valid environment variable name"),
    ("--env-file", "missing.json", "no such file"),
    ("--env-file", "bad.json", "not valid JSON"),
    ("--env-file", "shape.json", "expected an object of objects"),
    ("--env-file", "nested.json", "Parameters.X: values are strings (or numbers), not dict"),
    ("--env-file", "reserved.json", "Parameters.AWS_SECRET_ACCESS_KEY: AWS_SECRET_ACCESS_KEY is set by Lambda itself"),
])  # fmt: skip
def test_bad_environment_input_is_one_line(invoke, code, s3_event, tmp_path, option, value, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "shape.json").write_text('["Parameters"]')
    (tmp_path / "nested.json").write_text('{"Parameters": {"X": {"y": 1}}}')
    (tmp_path / "reserved.json").write_text('{"Parameters": {"AWS_SECRET_ACCESS_KEY": "x"}}')
    if option == "--env-file":
        value = str(tmp_path / value)
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", code, "--python", "3.11", "--no-credentials",
                    option, value)  # fmt: skip
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@needs_py311
def test_a_layers_boto3_wins_over_the_runtimes(invoke, code, tmp_path):
    (code / "envs.py").write_text(ENV_HANDLER)
    layer = make_layer(tmp_path / "boto.zip", {"python/boto3/__init__.py": "__version__ = '9.9.9'\n"})
    result = invoke("invoke", "envs.handler", "--layer", layer, "--event", env_event(tmp_path), "--code", code,
                    "--python", "3.11", "--no-credentials")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["boto3"] == "9.9.9" and seen["boto3_from_layer"]


def test_a_layer_of_another_runtime_or_architecture_is_refused(invoke, code, s3_event, tmp_path):
    manifest = {"name": "m", "python": "3.12", "architecture": "x86_64", "runtime": "python3.12", "backend": "wheels",
                "packages": [], "file_count": 1, "zipped_bytes": 1, "unzipped_bytes": 1, "sha256": "0" * 64,
                "code_sha256": "", "zip": "l312.zip"}  # fmt: skip
    layer = make_layer(tmp_path / "l312.zip", {"python/x.py": ""}, manifest)
    result = invoke("invoke", "ctx.handler", "--layer", layer, "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    assert result.stderr == (f"error: --layer {layer} is built for python3.12 x86_64, but this run is python3.11 x86_64 "
                             f"(from --python); use layers of one runtime and architecture\n")  # fmt: skip
    arm = make_layer(tmp_path / "arm.zip", {"python/y.py": ""}, {**manifest, "python": "3.12", "architecture": "arm64"})
    result = invoke("invoke", "ctx.handler", "--layer", layer, "--layer", arm, "--event", s3_event, "--code", code)
    assert result.exit_code == 1 and "is built for python3.12 arm64, but this run is python3.12 x86_64 (from the first layer" in result.stderr


@needs_py311
def test_later_layers_win(invoke, code, s3_event, tmp_path):
    first, second = two_layers(tmp_path)
    args = ["--event", s3_event, "--code", code, "--python", "3.11"]
    assert json.loads(invoke("invoke", "ctx.which_layer", "--layer", first, "--layer", second, *args).stdout) == "second"
    assert json.loads(invoke("invoke", "ctx.which_layer", "--layer", second, "--layer", first, *args).stdout) == "first"


@needs_py311
def test_opt_is_read_only(invoke, code, s3_event, tmp_path):
    first, _ = two_layers(tmp_path)
    result = invoke("invoke", "ctx.writes_opt", "--layer", first, "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] in ("OSError", "PermissionError")
    assert "Read-only file system" in error["errorMessage"] or "Permission denied" in error["errorMessage"]


@needs_py311
def test_timeout_is_reported_like_lambda(invoke, code, s3_event):
    result = invoke("invoke", "ctx.slow", "--event", s3_event, "--code", code, "--python", "3.11", "--timeout", "1")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"errorMessage": "Task timed out after 1.00 seconds", "errorType": "Sandbox.Timedout"}
    assert "Task timed out after 1.00 seconds" in result.stderr


@needs_py311
def test_handler_exceptions_are_lambda_error_objects(invoke, code, s3_event):
    result = invoke("invoke", "ctx.fails", "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "KeyError" and error["errorMessage"] == "'missing-thing'"
    assert any("in fails" in line for line in error["stackTrace"])
    result = invoke("invoke", "ctx.nope", "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"errorMessage": "Handler 'nope' missing on module 'ctx'",
                                         "errorType": "Runtime.HandlerNotFound", "stackTrace": []}  # fmt: skip
    result = invoke("invoke", "ctx.not_json", "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1 and json.loads(result.stdout)["errorType"] == "Runtime.MarshalError"


def test_bad_event_files_are_one_line_errors(invoke, code, tmp_path):
    missing = tmp_path / "nope.json"
    result = invoke("invoke", "ctx.handler", "--event", missing, "--code", code)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: --event {missing}: no such file")
    assert result.stderr.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{'Records': [")
    result = invoke("invoke", "ctx.handler", "--event", bad, "--code", code)
    assert result.exit_code == 1
    assert result.stderr == f"error: --event {bad}: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n"


def test_bad_arguments_are_one_line_errors(invoke, code, s3_event, tmp_path):
    result = invoke("invoke", "handler", "--event", s3_event, "--code", code)
    assert result.exit_code == 1
    assert result.stderr == "error: HANDLER 'handler': expected MODULE.FUNCTION, e.g. 'app.handler' or 'src/app.handler'\n"
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", code, "--timeout", "901")
    assert result.exit_code == 1 and "--timeout 901: Lambda timeouts are more than 0 and at most 900 seconds" in result.stderr
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", code, "--memory", "64")
    assert result.exit_code == 1 and "--memory 64: Lambda memory is 128 to 10240 MB" in result.stderr
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", tmp_path / "nowhere")
    assert result.exit_code == 1 and f"--code {tmp_path / 'nowhere'}: no such directory" in result.stderr


def test_hostile_layer_is_refused(invoke, code, s3_event, tmp_path):
    evil = hostile_layer(tmp_path / "evil" / "evil.zip")
    result = invoke("invoke", "ctx.handler", "--layer", evil, "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    assert result.stderr == f"error: {evil}: entry '../escaped.py' climbs out of the layer with '..'\n"
    assert not (tmp_path / "evil" / "escaped.py").exists()


def test_a_python_with_no_interpreter_cannot_be_invoked(invoke, code, s3_event, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = invoke("invoke", "ctx.handler", "--event", s3_event, "--code", code, "--python", "3.14")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot invoke for python3.14 on x86_64: no local python3.14")


def test_split_handler():
    assert split_handler("app.handler") == ("app", "handler")
    assert split_handler("src/pkg/app.main") == ("src.pkg.app", "main")
    for bad in ("app", ".handler", "app.", "my-app.handler", "app.1x"):
        with pytest.raises(Exception, match="expected MODULE.FUNCTION"):
            split_handler(bad)


@needs_py311
def test_a_runtime_that_exits_is_reported_like_lambda(invoke, code, s3_event):
    (code / "quits.py").write_text("import os\n\ndef handler(event, context):\n    os._exit(3)\n")
    result = invoke("invoke", "quits.handler", "--event", s3_event, "--code", code, "--python", "3.11")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")


@needs_py311
def test_init_longer_than_the_init_limit_is_stopped(code, s3_event):
    from layerbuild.trial.invoke import InvokeSpec
    from layerbuild.trial.invoke import invoke as run_invoke

    (code / "slowinit.py").write_text("import time\ntime.sleep(60)\n\ndef handler(event, context):\n    return 1\n")
    result = run_invoke(InvokeSpec("slowinit.handler", (), s3_event, code, python="3.11", init_timeout=1.0))
    assert not result.ok
    assert result.payload == {"errorMessage": "Init phase did not finish within 1.00 seconds", "errorType": "Runtime.InitTimeout"}


@needs_py311
def test_the_handler_gets_a_private_writable_tmp(invoke, code, s3_event):
    (code / "tmpw.py").write_text("import os, tempfile\n\ndef handler(event, context):\n"
                                  "    with tempfile.NamedTemporaryFile(delete=False) as handle:\n"
                                  "        handle.write(b'x')\n    return handle.name\n")  # fmt: skip
    result = invoke("invoke", "tmpw.handler", "--event", s3_event, "--code", code, "--python", "3.11", "--no-credentials")
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert "/layerbuild-invoke-" in written and written.split("/")[-2] == "tmp"
    assert not os.path.exists(written)  # gone with the run


@needs_py311
def test_the_stack_trace_lists_the_exceptions_frames_only(invoke, code, s3_event):
    (code / "chained.py").write_text("def inner():\n    raise KeyError('k')\n\ndef handler(event, context):\n"
                                     "    try:\n        inner()\n    except KeyError as exc:\n"
                                     "        raise ValueError('wrapped') from exc\n")  # fmt: skip
    result = invoke("invoke", "chained.handler", "--event", s3_event, "--code", code, "--python", "3.11", "--no-credentials")
    error = json.loads(result.stdout)
    assert result.exit_code == 1 and error["errorType"] == "ValueError" and error["errorMessage"] == "wrapped"
    assert len(error["stackTrace"]) == 1 and 'chained.py", line 8, in handler' in error["stackTrace"][0]
    assert not any("Traceback" in line or "During handling" in line or "direct cause" in line for line in error["stackTrace"])
