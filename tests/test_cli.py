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
    from layerbuild.cli import _stdout_is_gone

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as healthy:
        monkeypatch.setattr(sys, "stdout", healthy)
        assert _stdout_is_gone() is False  # a reader is there
        os.close(read_end)
        assert _stdout_is_gone() is True
