"""What the job kinds share: the checks before a start, finding an image in a
chain, making and opening a target, copying extents with their zeros kept as
zeros."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from vmforge.block.backend import BlockBackend, Layer, create_image, open_driver, resolve_backing
from vmforge.block.driver import BlockError, Extent, UnsupportedOperation
from vmforge.block.jobs.job import BlockJob, JobError, check_free, io
from vmforge.block.probe import driver_class, format_names

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["CHUNK", "SYNC_MODES", "check_start", "copy_extents", "find_backing",
           "make_target", "new_target", "started", "view"]

#: the largest piece a job reads and writes at once (QEMU's mirror buffer: 1 MiB)
CHUNK = 1 << 20
MODES = ("absolute-paths", "existing")
SYNC_MODES = ("full", "top", "none")
J = TypeVar("J", bound=BlockJob)


def check_start(backend: BlockBackend, device: str, job_id: str | None, speed: int,
                registry: JobRegistry | None) -> None:
    """What QEMU refuses before it makes a target: a bad speed, a busy device, a job
    id in use."""
    from vmforge.block.jobs.registry import JOBS

    if speed < 0:
        raise JobError("Invalid parameter 'speed'")
    check_free(backend, device)
    (registry if registry is not None else JOBS).check_id(job_id if job_id is not None
                                                          else device)


def find_backing(bb: BlockBackend, name: str, start: int = 0) -> int | None:
    """The depth of the backing image ``name`` names below ``start`` (QEMU's
    bdrv_find_backing_image: the name as recorded, or the same file)."""
    layers = bb.layers
    for d in range(start, len(layers) - 1):
        if layers[d].driver.backing_filename == name:
            return d + 1
        try:
            want = os.path.realpath(resolve_backing(layers[d].filename, name))
            if want == os.path.realpath(layers[d + 1].filename):
                return d + 1
        except OSError:
            continue
    return None


def view(layers: list[Layer]) -> BlockBackend:
    """A BlockBackend over part of a chain (not to be closed: the layers are shared)."""
    return BlockBackend(layers)


def make_target(path: str, fmt: str | None, mode: str, size: int, *,
                backing: Layer | None = None, source: BlockBackend | None = None,
                **create_opts: Any) -> str:
    """Create the target (``absolute-paths``; ``backing`` becomes its backing file) or
    check it is there (``existing``); the format to open it with.  An image of the
    ``source``'s chain is refused as QEMU's locks refuse it (a backing file too:
    QEMU's overlay does not share writes to it)."""
    if mode not in MODES:
        raise JobError(f"Parameter 'mode' does not accept value '{mode}'")
    if source is not None and os.path.exists(path):
        here = os.stat(path)
        for la in source.layers:
            st = os.stat(la.filename)
            if (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino):
                raise JobError('Failed to get "write" lock')
    if mode == "existing":
        # (an NBD export, "nbd:...", "nbd[+unix]://..." or json:{"driver": "nbd"...},
        # is no file: opening it tells)
        from vmforge.block.nbd import is_nbd_name

        if not os.path.exists(path) and not is_nbd_name(path):
            raise JobError(f"Could not open '{path}': No such file or directory")
        return fmt or ""
    assert fmt is not None
    if fmt not in format_names():
        raise JobError(f"Unknown file format '{fmt}'")
    opts = dict(create_opts)
    if backing is not None:
        if not driver_class(fmt).supports_backing:
            raise JobError(f"Backing file not supported for file format '{fmt}'")
        opts["backing_file"] = backing.filename
        opts["backing_fmt"] = backing.format
    try:
        create_image(fmt, path, size, **driver_class(fmt).parse_create_options(opts))
    except UnsupportedOperation as exc:
        raise JobError(f"Format driver '{fmt}' does not support image creation") from exc
    except (BlockError, OSError, ValueError) as exc:
        raise JobError(f"Could not create '{path}': {exc}") from exc
    return fmt


def open_target(path: str, fmt: str | None) -> Layer:
    """The target's image alone, writable."""
    try:
        return open_driver(path, fmt or None, readonly=False)
    except BlockError as exc:
        raise JobError(str(exc)) from exc


def new_target(backend: BlockBackend, target: str, fmt: str | None, sync: str, mode: str,
               create_opts: dict[str, Any], *, with_backing: bool) -> tuple[str, BlockBackend]:
    """drive-mirror's and drive-backup's target: the sync mode as QEMU takes it (top
    without a backing file is full), the target made with the backing file the mode
    gives it (top: the source's backing file, none: the source) and opened writable
    (its backing chain too if ``with_backing``)."""
    if sync not in SYNC_MODES:
        raise JobError(f"Parameter 'sync' does not accept value '{sync}'")
    if sync == "top" and len(backend.layers) == 1:
        sync = "full"
    if fmt is None and mode != "existing":
        fmt = backend.format
    backing = {"full": None, "top": backend.layers[1] if len(backend.layers) > 1 else None,
               "none": backend.layers[0]}[sync]
    fmt = make_target(target, fmt, mode, backend.size, backing=backing, source=backend,
                      **create_opts)
    try:
        return sync, BlockBackend.open(target, fmt or None, readonly=False,
                                       backing=with_backing)
    except BlockError as exc:
        raise JobError(str(exc)) from exc


def started(target: BlockBackend, make: Callable[[], J]) -> J:
    """``make()`` the job and start it; the target is closed if either fails."""
    try:
        job = make()
        job.start()
    except BaseException:
        if not target.closed:
            target.close()
        raise
    return job


def copy_extents(src: BlockBackend, dst: BlockBackend, extents: Iterable[Extent],
                 buf: bytearray | memoryview, skip_zeroes: bool = False) -> None:
    """Copy each extent (at most ``len(buf)`` long) from ``src``'s chain to ``dst``: what
    reads as zeros written as zeros (not at all with ``skip_zeroes``: ``dst`` reads
    zeros there already); errors as the job's read or write failures."""
    mv = memoryview(buf)
    for e in extents:
        if e.is_zero and not e.is_data:
            if not skip_zeroes:
                with io("write"):
                    dst.write_zeroes(e.offset, e.length)
            continue
        piece = mv[:e.length]
        with io("read"):
            src.preadv(e.offset, [piece])
        with io("write"):
            dst.pwritev(e.offset, [piece])


def status(bb: BlockBackend, offset: int, length: int) -> list[Extent]:
    """The chain's extents over the range (a failure: the job's read failure)."""
    with io("read"):
        return list(bb.block_status(offset, length))
