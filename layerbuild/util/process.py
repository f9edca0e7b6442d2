"""Processes and signals: whether a pid is alive, and holding Ctrl-C back over a critical block."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextmanager
def sigint_held() -> Iterator[None]:
    """Defer Ctrl-C until the block is done (it is delivered right after).

    The Python-level handler is swapped for one that only records the signal: Python runs signal
    handlers in the main thread whichever thread the OS picked. (Blocking SIGINT with
    pthread_sigmask held it for the main thread only: with worker threads alive the kernel handed it
    to one of them, and the KeyboardInterrupt still landed inside the block.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            if callable(old):
                old(signal.SIGINT, None)  # default_int_handler raises KeyboardInterrupt; an outer hold records it
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)
