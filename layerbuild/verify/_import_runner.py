"""Runs inside the target interpreter (python -I -S -B -c <this source> CONFIG): import modules, time them.

Kept to the Python 3.8 language and the standard library: it runs in every Lambda runtime image and
under QEMU. CONFIG is one JSON argument: {"root": the /opt-like layer directory, "modules": [...],
"after": [directories that come after the layer's entries: the runtime's own packages], "provided":
[top-level names the runtime provides (boto3, ...)]}. It puts exactly Lambda's layer entries first on
sys.path, imports each module, and prints one line "LAYERBUILD-RESULT: {json}". A name in "provided"
that nothing on sys.path has is reported in "runtime_wanted" (the caller may then supply the runtime's
packages and run again).
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


class RuntimeWanted(object):
    """Last on sys.meta_path: notes a runtime-provided top-level name that no other finder found."""

    def __init__(self, provided):
        self.provided = set(provided)
        self.wanted = set()

    def find_spec(self, name, path=None, target=None):
        if path is None and name in self.provided:
            self.wanted.add(name)
        return None

    def find_module(self, name, path=None):  # Python < 3.4 protocol, for completeness
        self.find_spec(name, path)
        return None


def describe(exc):
    """The exception's last line, and what it names: the missing module or file (for slimming's report)."""
    error = traceback.format_exception_only(type(exc), exc)[-1].strip()
    names = {}
    if isinstance(exc, ImportError) and getattr(exc, "name", None):
        names["missing_module"] = exc.name
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        names["missing_file"] = str(exc.filename)
    return error, names


def main(argv):
    config = json.loads(argv[0])
    root = config["root"]
    sys.path[:0] = lambda_paths(root)
    position = len(lambda_paths(root))
    for folder in config.get("after", []):
        if os.path.isdir(folder):  # the image's /var/runtime or /var/lang/lib/.../site-packages, as they exist
            sys.path.insert(position, folder)
            position += 1
    sys.dont_write_bytecode = True  # a layer is read-only: never try to write __pycache__
    watcher = RuntimeWanted(config.get("provided", []))
    sys.meta_path.append(watcher)
    results = []
    for module in config["modules"]:
        sys.stdout.write("\n" + IMPORTING + module + "\n")
        sys.stdout.flush()
        started = time.perf_counter()
        entry = {"module": module}
        try:
            __import__(module)
            error = None
        except BaseException as exc:  # SystemExit and KeyboardInterrupt from a module are failures too
            error, names = describe(exc)
            entry.update(names)
        elapsed = (time.perf_counter() - started) * 1000.0
        entry.update({"ok": error is None, "ms": round(elapsed, 1), "error": error})
        results.append(entry)
    report = {
        "python": "%d.%d" % sys.version_info[:2],
        "version": "%d.%d.%d" % sys.version_info[:3],
        "executable": sys.executable,
        "machine": os.uname().machine,
        "sys_path": sys.path[:position],
        "read_only": not writable(root),
        "runtime_wanted": sorted(watcher.wanted),
        "results": results,
    }
    sys.stdout.write("\n" + MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
