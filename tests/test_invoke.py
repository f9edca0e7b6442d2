"""`layerbuild invoke`: handlers run with real layers stacked as Lambda stacks them."""

import json

import pytest

from layerbuild.interpreters import find_local_python
from layerbuild.invoke import split_handler
from runtime_layers import build_real_layer, hostile_layer, make_layer

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
    values["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
    values["env_name"] = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    values["sys_path_head"] = sys.path[:3]
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
def test_context_has_lambdas_attributes_and_no_host_secrets(invoke, code, s3_event, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
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
    assert value["secret"] is None and value["env_name"] == "thumbs"
    assert value["sys_path_head"][0] == str(code.resolve())
    assert value["sys_path_head"][1].endswith("/opt/python/lib/python3.11/site-packages")
    assert value["sys_path_head"][2].endswith("/opt/python")


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
    from layerbuild.invoke import InvokeSpec, invoke as run_invoke

    (code / "slowinit.py").write_text("import time\ntime.sleep(60)\n\ndef handler(event, context):\n    return 1\n")
    result = run_invoke(InvokeSpec("slowinit.handler", (), s3_event, code, python="3.11", init_timeout=1.0))
    assert not result.ok
    assert result.payload == {"errorMessage": "Init phase did not finish within 1.00 seconds", "errorType": "Runtime.InitTimeout"}
