"""Runs inside the target interpreter (python -I -S -c <this source>): import modules, time them.

Kept to the Python 3.8 language and the standard library: it runs in every Lambda runtime image.
Arguments: ROOT (the /opt-like layer directory) then MODULE ... . It puts exactly Lambda's layer
entries on sys.path, imports each module, and prints one line "LAYERBUILD-RESULT: {json}".
"""

import json
import os
import sys
import time
import traceback

MARKER = "LAYERBUILD-RESULT: "
# Written before each import: if a module kills the interpreter (segfault in a .so), the last one names it.
IMPORTING = "LAYERBUILD-IMPORTING: "


def lambda_paths(root):
    version = "python%d.%d" % sys.version_info[:2]
    return [os.path.join(root, "python", "lib", version, "site-packages"), os.path.join(root, "python")]


def writable(root):
    """True when the layer directory accepts a new file (it must not: /opt is read-only on Lambda)."""
    probe = os.path.join(root, ".layerbuild-write-probe")
    try:
        with open(probe, "w") as handle:
            handle.write("x")
    except OSError:
        return False
    os.unlink(probe)
    return True


def main(argv):
    root, modules = argv[0], argv[1:]
    sys.path[:0] = lambda_paths(root)
    sys.dont_write_bytecode = True  # a layer is read-only: never try to write __pycache__
    results = []
    for module in modules:
        sys.stdout.write("\n" + IMPORTING + module + "\n")
        sys.stdout.flush()
        started = time.perf_counter()
        try:
            __import__(module)
            error = None
        except BaseException as exc:  # SystemExit and KeyboardInterrupt from a module are failures too
            error = traceback.format_exception_only(type(exc), exc)[-1].strip()
        elapsed = (time.perf_counter() - started) * 1000.0
        results.append({"module": module, "ok": error is None, "ms": round(elapsed, 1), "error": error})
    report = {
        "python": "%d.%d" % sys.version_info[:2],
        "executable": sys.executable,
        "machine": os.uname().machine,
        "sys_path": sys.path[:2],
        "read_only": not writable(root),
        "results": results,
    }
    sys.stdout.write("\n" + MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
