"""Waiting for CPU threads while holding the machine's big lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["released"]


@contextlib.contextmanager
def released(lock: Any) -> Iterator[None]:
    """Let go of ``lock`` (an RLock, perhaps held more than once by this thread,
    or not at all) for the body, and take it again as often afterwards: a CPU
    thread that needs the lock to finish a device access can then end while this
    thread waits for it."""
    held = 0
    while True:
        try:
            lock.release()
        except RuntimeError:        # not held (any more) by this thread
            break
        held += 1
    try:
        yield
    finally:
        for _ in range(held):
            lock.acquire()
