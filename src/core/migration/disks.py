"""Handing shared disk images over between the two ends of a live migration.

QEMU's inactive images: the destination opens its images without locks (the
source still writes them) and reopens them, locked and with fresh metadata,
once it has the whole stream; the source flushes its images, stops writing
them and lets go of their locks when it sends the last of the stream, and
takes them again if the migration fails or the guest is continued there.
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
    """Flush every disk, make it read-only (nothing, not even closing it, writes
    it from now on: QEMU's inactive image) and drop its lock (the source, devices
    drained); what was let go, for :func:`reacquire`."""
    released = []
    for _name, backend in _drives(machine):
        backend.flush()
        top = backend.layers[0]
        top.driver.readonly = True
        if top.lock is not None and top.lock.fd is not None:
            top.lock.release()
        released.append(top)
    return released


def reacquire(layers: list[Any]) -> None:
    """The source holds its images again (the migration failed, or ``cont``):
    their locks first (LockedError while another process has them), then writes."""
    for layer in layers:
        if layer.lock is not None and layer.lock.fd is None:
            layer.lock.acquire()
    for layer in layers:
        layer.driver.readonly = False


def activate(machine: Any) -> None:
    """Reopen every disk read-write with its lock and the metadata as the source
    left it (the destination, before its guest runs)."""
    for _name, backend in _drives(machine):
        backend.reopen_layer(0, readonly=False)
