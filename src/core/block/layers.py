"""One image of a chain: opening it (locked, probed), creating one, closing some.

:class:`~vmforge.block.backend.BlockBackend` builds its chain of :class:`Layer`
objects with :func:`open_driver`; block jobs and the QMP node graph open, swap
and close layers with the same functions.
"""

from __future__ import annotations

import os

from vmforge.block.driver import BlockDriver, BlockError
from vmforge.block.locking import ImageLock
from vmforge.block.probe import driver_class, probe_format
from vmforge.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = ["Layer", "close_layers", "create_image", "open_driver", "resolve_backing"]

#: what an NBD export's name starts with (:func:`vmforge.block.nbd.is_nbd_name` decides;
#: a file's name is told without importing the NBD client's sockets)
_NBD_PREFIXES = ("nbd", "json:")


def is_nbd_name(path: str) -> bool:
    """Whether ``path`` names an NBD export (:mod:`vmforge.block.nbd` imported only for
    a name that may be one)."""
    if not path.startswith(_NBD_PREFIXES):
        return False
    from vmforge.block.nbd import is_nbd_name as nbd_name

    return nbd_name(path)


class Layer(Record):
    """One image of a chain: its driver, its format name and its file lock (a record)."""

    __slots__ = __match_args__ = ("driver", "format", "lock")
    driver: BlockDriver
    format: str
    lock: ImageLock | None

    def __init__(self, driver: BlockDriver, format: str, lock: ImageLock | None) -> None:
        self.driver = driver
        self.format = format
        self.lock = lock

    @property
    def filename(self) -> str:
        return self.driver.filename


def resolve_backing(image: str, backing: str) -> str:
    """A backing file name as recorded in ``image``, as a path to open.

    Relative names are relative to the directory of ``image`` (as in QEMU).
    """
    if os.path.isabs(backing):
        return backing
    return os.path.join(os.path.dirname(image), backing)


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def open_driver(path: str, fmt: str | None, *, readonly: bool, force_share: bool = False,
                backing: bool = False, **options: Any) -> Layer:
    """Open one image (no backing files), locked; ``fmt`` None: probe."""
    if is_nbd_name(path):       # an NBD export: no file, no lock
        from vmforge.block.nbd import open_nbd_layer

        return open_nbd_layer(path, fmt, readonly=readonly)
    if not os.path.exists(path):
        raise BlockError("could not open: No such file or directory", path)
    fmt = fmt or probe_format(path, writable=not readonly)
    cls = driver_class(fmt)
    lock = ImageLock.for_open(path, readonly=readonly, force_share=force_share, backing=backing)
    try:
        driver = cls.open(path, readonly=readonly, **options)
    except OSError as exc:
        lock.release()
        raise BlockError(f"could not open as {fmt}: {exc.strerror or exc}", path) from exc
    except BaseException:
        lock.release()
        raise
    return Layer(driver, fmt, lock)


def create_image(format: str, path: str, size: int, **options: Any) -> None:
    """Create an image with the driver of ``format``.

    An existing file is overwritten only if no other process uses it: the
    write locks are taken first, as QEMU's ``file`` driver does on create, so
    ``create`` or ``convert`` onto the disk of a running VM is refused.
    """
    if is_nbd_name(path):       # an NBD export is there already: QEMU's simple create
        from vmforge.block.nbd import create_on_export

        create_on_export(path, format, size)
        return
    cls = driver_class(format)
    existed = os.path.lexists(path)
    lock = ImageLock.for_open(path, readonly=False) if os.path.isfile(path) else None
    try:
        cls.create(path, size, **options)
    except BaseException as exc:
        # a failed create leaves nothing behind that it made (qemu-img too), and
        # names the file it could not write (ENOSPC and the like)
        if not existed and os.path.isfile(path):
            try:
                os.unlink(path)
            except OSError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, BlockError):
            raise BlockError(f"could not create: {exc.strerror or exc}", path) from exc
        raise
    finally:
        if lock is not None:
            lock.release()


def _close_layer(layer: Layer) -> None:
    try:
        layer.driver.close()
    finally:
        if layer.lock is not None:
            layer.lock.release()


def close_layers(layers: Iterable[Layer]) -> None:
    """Close each layer and drop its lock; the first error is raised after all."""
    errors: list[BaseException] = []
    for layer in layers:
        try:
            _close_layer(layer)
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
