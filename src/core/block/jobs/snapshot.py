"""blockdev-snapshot-sync: an external snapshot, taken in place.

A new overlay (qcow2 by default) whose backing file is the current top image is
created (``absolute-paths``) or taken as it is (``existing``); then, drained,
it becomes the active layer of the same backend and the old top is reopened
read-only as its backing file.
"""

from __future__ import annotations

from vmforge.block.backend import BlockBackend, close_layers, open_driver
from vmforge.block.driver import BlockError
from vmforge.block.jobs.chain import make_target
from vmforge.block.jobs.job import JobError, check_free

__all__ = ["snapshot_sync"]


def snapshot_sync(backend: BlockBackend, snapshot_file: str, *, format: str = "qcow2",
                  mode: str = "absolute-paths", device: str | None = None) -> None:
    """Make a new overlay ``snapshot_file`` the active layer of ``backend``."""
    name = device or backend.filename
    check_free(backend, name)
    if backend.readonly:
        raise JobError(f"Node '{name}' is read only")
    make_target(snapshot_file, format, mode, backend.size, backing=backend.layers[0],
                source=backend)
    with backend.drained():
        backend.flush()
        try:
            new = open_driver(snapshot_file, format, readonly=False)
        except BlockError as exc:
            raise JobError(str(exc)) from exc
        new.driver.sync = backend.top.sync
        if new.driver.size != backend.size:
            close_layers([new])
            raise JobError("The snapshot's size differs from the image's")
        backend.layers.insert(0, new)
        try:
            backend.reopen_layer(1, readonly=True)
        except BaseException:
            backend.layers.pop(0)
            close_layers([new])
            raise
