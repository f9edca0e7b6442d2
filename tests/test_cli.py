"""The command line as a shell pipeline sees it."""

import os
import subprocess
import sys


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run layerbuild with its standard output on a pipe whose reader is already gone (`... | head` once
    head has exited): every write fails with EPIPE, whatever the timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "layerbuild", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)


def test_a_closed_pipe_ends_the_command_quietly():
    result = run_into_closed_pipe("targets")
    assert result.returncode == 1
    assert result.stderr == ""  # no "internal error", no traceback


def test_only_our_own_output_going_away_counts_as_a_closed_pipe(monkeypatch):
    """Any other EPIPE (a pipe to a child process, say) is a bug to report, not a reason to go quiet."""
    from layerbuild.cli.main import _stdout_is_gone

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as healthy:
        monkeypatch.setattr(sys, "stdout", healthy)
        assert _stdout_is_gone() is False  # a reader is there
        os.close(read_end)
        assert _stdout_is_gone() is True


def test_ctrl_c_inside_a_string_exec_still_exits_130(tmp_path):
    """Ctrl-C that lands while dataclasses builds a method (an exec() of a string) made `python -m layerbuild`
    die by SIGINT after printing 'error: interrupted' (CPython keeps such an interrupt marked as unhandled),
    so scripts saw -2 instead of 130 now and then. Raised here deterministically, without a signal."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "from layerbuild.cli.main import main\n\n"
        "@main.command('boom')\n"
        "def boom():\n"
        "    exec('raise KeyboardInterrupt')\n\n"
        "main(['boom'])\n",
        encoding="utf-8",
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run([sys.executable, "-m", "interrupted_in_exec"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 130, result
    assert result.stderr == "error: interrupted\n"
