"""Runs in the child interpreter of `layerbuild invoke` (python -I -S -c <this source> CONFIG).

Kept to the Python 3.8 language and the standard library. CONFIG is a JSON file: handler, event,
paths, context values, the timeout, where to write the result and the fd to signal "init done" on.
The handler's prints go to stderr (Lambda sends them to the log, not to the response).
"""

import json
import os
import sys
import time
import traceback


class LambdaContext(object):
    """The attributes Lambda's Python runtime gives the handler's context argument."""

    def __init__(self, config, deadline):
        self.function_name = config["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = config["invoked_function_arn"]
        self.memory_limit_in_mb = config["memory_limit_in_mb"]
        self.aws_request_id = config["aws_request_id"]
        self.log_group_name = "/aws/lambda/" + config["function_name"]
        self.log_stream_name = config["log_stream_name"]
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def error_payload(exc, error_type=None, message=None):
    """Lambda's error object: the exception's own frames only (no chained exceptions), the runner's left out."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != "<string>"]
    return {"errorMessage": message if message is not None else str(exc), "errorType": error_type or type(exc).__name__,
            "stackTrace": [line.rstrip("\n") for line in traceback.format_list(frames)]}


def write_result(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


def main(config_path):
    with open(config_path) as handle:
        config = json.load(handle)
    result_path = config["result_path"]
    root = config["root"]
    version = "python%d.%d" % sys.version_info[:2]
    # Lambda's order: the function's code, then the layers' two entries, then the runtime's own packages.
    sys.path[:0] = [config["code_dir"], os.path.join(root, "python", "lib", version, "site-packages"),
                    os.path.join(root, "python")] + list(config.get("after", []))  # the runtime's own packages
    sys.dont_write_bytecode = True
    os.dup2(2, 1)  # the handler's prints are logs
    sys.stdout = sys.stderr
    module_name, function_name = config["module"], config["function"]
    try:
        module = __import__(module_name, fromlist=["_"])
    except Exception as exc:
        write_result(result_path, {"ok": False, "error": error_payload(
            exc, "Runtime.ImportModuleError", "Unable to import module '%s': %s" % (module_name, exc))})
        return
    handler = getattr(module, function_name, None)
    if not callable(handler):
        write_result(result_path, {"ok": False, "error": {
            "errorMessage": "Handler '%s' missing on module '%s'" % (function_name, module_name),
            "errorType": "Runtime.HandlerNotFound", "stackTrace": []}})
        return
    with open(config["event_path"]) as handle:
        event = json.load(handle)
    os.write(config["ready_fd"], b"R")  # init is over: the invoke's timeout starts now
    os.close(config["ready_fd"])
    context = LambdaContext(config, time.monotonic() + config["timeout"])
    try:
        value = handler(event, context)
    except Exception as exc:
        write_result(result_path, {"ok": False, "error": error_payload(exc)})
        return
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        write_result(result_path, {"ok": False, "error": {
            "errorMessage": "Unable to marshal response: %s" % exc, "errorType": "Runtime.MarshalError", "stackTrace": []}})
        return
    write_result(result_path, {"ok": True, "value": value})


if __name__ == "__main__":
    main(sys.argv[1])
