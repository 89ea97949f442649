"""What the job kinds share: finding an image in a chain, making and opening a
target, copying a range with its zeros kept as zeros."""

from __future__ import annotations

import os
from typing import Any

from vmforge.block.backend import BlockBackend, Layer, create_image, open_driver, resolve_backing
from vmforge.block.driver import BlockError
from vmforge.block.jobs.job import JobError
from vmforge.block.probe import driver_class, format_names

__all__ = ["CHUNK", "copy_extent", "find_backing", "make_target", "view"]

#: the largest piece a job reads and writes at once (QEMU's mirror buffer: 1 MiB)
CHUNK = 1 << 20
MODES = ("absolute-paths", "existing")


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
        if not os.path.exists(path):
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
    except (BlockError, OSError, ValueError) as exc:
        raise JobError(f"Could not create '{path}': {exc}") from exc
    return fmt


def open_target(path: str, fmt: str | None) -> Layer:
    """The target's image alone, writable."""
    try:
        return open_driver(path, fmt or None, readonly=False)
    except BlockError as exc:
        raise JobError(str(exc)) from exc


def copy_extent(src: BlockBackend, dst: BlockBackend, offset: int, length: int,
                buf: bytearray, zero: bool, dst_is_zero: bool = False) -> None:
    """Copy ``[offset, offset+length)`` (at most ``len(buf)``) from ``src`` as its chain
    reads to ``dst``'s top; ``zero``: the range reads as zeros (written as such)."""
    if zero:
        if not dst_is_zero:
            dst.write_zeroes(offset, length)
        return
    mv = memoryview(buf)[:length]
    src.preadv(offset, [mv])
    dst.pwritev(offset, [mv])


def zero_at(bb: BlockBackend, offset: int, length: int) -> bool:
    """Whether the chain reads ``[offset, offset+length)`` as zeros by its block status."""
    return all(e.is_zero and not e.is_data for e in bb.block_status(offset, length))
