"""A thread pool whose shutdown a Ctrl-C cannot corrupt.

Python 3.11's Thread.join, when a KeyboardInterrupt lands while it waits, releases the lock of the
thread it waits for although that thread still runs (the bpo-45274 handling in
_wait_for_tstate_lock): the thread then counts as stopped, and the process can later fail with
"release unlocked lock". ThreadPoolExecutor's `with` exit joins its threads, which is
exactly where a Ctrl-C lands when the caller waits for the pool to finish.

ThreadPool waits for its jobs through their futures instead (condition waits, safe to interrupt),
and joins only once every job is done or, when the block failed, once the jobs not yet started are
cancelled; that join runs with Ctrl-C held (it is raised right after), so it only ever waits for
jobs that are already running.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, TypeVar

from layerbuild.util.process import sigint_held

T = TypeVar("T")
# Files up to this size go to a pool in groups of about this many bytes (botocore: 2,000 small JSON files).
BATCH_BYTES = 1 << 18


class ThreadPool(ThreadPoolExecutor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._submitted: list[Future] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:  # map() submits through here too
        future = super().submit(fn, *args, **kwargs)
        self._submitted.append(future)
        return future

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        failed = exc_type is not None
        try:
            if not failed:
                wait(self._submitted)
        except BaseException:
            failed = True
            raise
        finally:
            with sigint_held():
                self.shutdown(wait=True, cancel_futures=failed)
        return False


def in_batches(items: list[T], size: Callable[[T], int | None], limit: int) -> list[list[T]]:
    """items in their order, grouped for a pool: consecutive small ones together up to `limit` bytes,
    the others (size above limit, or None) alone. For thousands of small files a future and a thread
    switch each cost more than the work itself."""
    batches: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        weight = size(item)
        small = weight is not None and weight <= limit
        if current and (not small or total + weight > limit):
            batches.append(current)
            current, total = [], 0
        if small:
            current.append(item)
            total += weight
        else:
            batches.append([item])
    if current:
        batches.append(current)
    return batches
