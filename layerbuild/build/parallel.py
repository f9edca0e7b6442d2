"""Build several targets at once on a bounded thread pool, reporting every failure.

Builds spend their time in subprocesses (uv, compileall, strip) and zlib, which release the GIL,
so threads give real parallelism. One target's failure never hides another's: every target runs,
and the failures are reported together.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

from layerbuild.errors import BuildError, LayerbuildError
from layerbuild.util.threadpool import ThreadPool

MAX_WORKERS = 4
Job = TypeVar("Job")


class TargetFailures(BuildError):
    """Some targets failed; `outcomes` holds the ones that were built."""

    def __init__(self, failures: list[tuple[str, LayerbuildError]], total: int, outcomes: list):
        details = "; ".join(f"[{label}] {exc.message}" for label, exc in failures)
        super().__init__(f"{len(failures)} of {total} targets failed: {details}")
        self.failures = failures
        self.outcomes = outcomes


def worker_count(jobs: int) -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1, jobs))


def run_all(jobs: Sequence[Job], build_one: Callable[[Job], object], label: Callable[[Job], str],
            on_failure: Callable[[Job, LayerbuildError], None] | None = None) -> list:  # fmt: skip
    """Run build_one over jobs (in order of jobs in the result); raise TargetFailures if any failed.

    A single job runs in the calling thread, so Ctrl-C handling stays exactly as for one build.
    Only user-facing errors (LayerbuildError) are collected; a bug still raises its traceback.
    """
    if len(jobs) == 1:
        return [build_one(jobs[0])]
    results: list = [None] * len(jobs)
    failures: list[tuple[str, LayerbuildError]] = []
    with ThreadPool(max_workers=worker_count(len(jobs)), thread_name_prefix="layerbuild") as pool:
        futures = [pool.submit(build_one, job) for job in jobs]
        try:
            for index, future in enumerate(futures):
                try:
                    results[index] = future.result()
                except LayerbuildError as exc:
                    failures.append((label(jobs[index]), exc))
                    if on_failure:
                        on_failure(jobs[index], exc)
        except BaseException:
            for future in futures:  # Ctrl-C: start nothing new; running builds finish and publish atomically
                future.cancel()
            raise
    outcomes = [r for r in results if r is not None]
    if failures:
        raise TargetFailures(failures, len(jobs), outcomes)
    return outcomes
