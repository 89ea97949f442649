"""Handing shared disk images over between the two ends of a live migration.

QEMU's inactive images: the destination opens its images without locks (the
source still writes them) and reopens them, locked and with fresh metadata,
once it has the whole stream; the source flushes its images and lets go of
their locks when it sends the last of the stream, and takes them again if the
migration fails or the guest is continued there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vmforge.block import locking
from vmforge.migration.snapshot import _drives

__all__ = ["activate", "deferred_locks", "inactivate", "reacquire"]


@contextlib.contextmanager
def deferred_locks() -> Iterator[None]:
    """Images opened inside take no lock (a destination building its machine)."""
    locking.defer_locks = True
    try:
        yield
    finally:
        locking.defer_locks = False


def inactivate(machine: Any) -> list[Any]:
    """Flush every disk and drop its lock (the source, devices drained); the
    locks dropped, for :func:`reacquire`."""
    released = []
    for _name, backend in _drives(machine):
        backend.flush()
        lock = backend.layers[0].lock
        if lock is not None and lock.fd is not None:
            lock.release()
            released.append(lock)
    return released


def reacquire(locks: list[Any]) -> None:
    """The migration failed: the source holds its images again."""
    for lock in locks:
        if lock.fd is None:
            lock.acquire()


def activate(machine: Any) -> None:
    """Reopen every disk read-write with its lock and the metadata as the source
    left it (the destination, before its guest runs)."""
    for _name, backend in _drives(machine):
        backend.reopen_layer(0, readonly=False)
