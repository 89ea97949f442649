"""Image file locking, compatible with QEMU's (``file-posix.c``).

QEMU takes open-file-description locks (``F_OFD_SETLK``), all shared, on
single bytes of the image file: byte ``100 + i`` while it *uses* permission
``i``, byte ``200 + i`` while it *refuses to share* permission ``i`` with
others.  Opening then tests (``F_OFD_GETLK``) whether anyone else refuses a
permission it wants, or uses one it refuses.  vmforge uses the same bytes, so
``qemu-img`` and ``vmforge img`` see each other's locks.

- a reader uses READ and refuses to share WRITE and RESIZE;
- a writer uses READ, WRITE and RESIZE and refuses to share WRITE and RESIZE:
  a second writer, or a reader while a writer is there, is refused;
- a backing file uses READ and refuses nothing;
- ``force_share`` (``-U``, read-only opens only) takes and refuses nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from vmforge.block.driver import BlockError
from vmforge.flags import Flags
from vmforge.lazy import lazy_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["ImageLock", "LockedError", "Perm"]

log = lazy_logger(__name__)

_PERM_BASE = 100
_SHARED_BASE = 200
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
_FLOCK = struct.Struct("@hhqqi4x")


class Perm(Flags):
    """QEMU's BLK_PERM_* bits (the bit index picks the lock byte); an ``enum.IntFlag``
    look-alike (:class:`vmforge.flags.Flags`)."""

    READ: ClassVar[Perm]              # BLK_PERM_CONSISTENT_READ
    WRITE: ClassVar[Perm]
    WRITE_UNCHANGED: ClassVar[Perm]
    RESIZE: ClassVar[Perm]


Perm.define(READ=0x01, WRITE=0x02, WRITE_UNCHANGED=0x04, RESIZE=0x08)


_NAMES = {Perm.READ: "consistent read", Perm.WRITE: "write",
          Perm.WRITE_UNCHANGED: "write unchanged", Perm.RESIZE: "resize"}
_ALL = (Perm.READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE)


#: set while the destination of a live migration opens its images (QEMU opens them
#: inactive): no lock is taken then; the migration reopens them, locked, once the
#: source has let go (vmforge.migration.disks)
defer_locks = False


class LockedError(BlockError):
    """Another process holds a lock that conflicts with this open."""


class ImageLock:
    """The locks one open image holds on its file (released by :meth:`release`)."""

    def __init__(self, path: str, use: Perm, unshare: Perm) -> None:
        self.path = path
        self.use = use
        self.unshare = unshare
        self.fd: int | None = None

    @classmethod
    def for_open(cls, path: str, *, readonly: bool, force_share: bool = False,
                 backing: bool = False) -> ImageLock:
        """Take the locks an open of this kind needs, or raise :class:`LockedError`."""
        if force_share and not readonly:
            raise BlockError("force-share (-U) can only be used with read-only opens", path)
        if force_share or defer_locks:
            lock = cls(path, Perm(0), Perm(0))
        elif backing:
            lock = cls(path, Perm.READ, Perm(0))
        elif readonly:
            lock = cls(path, Perm.READ, Perm.WRITE | Perm.RESIZE)
        else:
            lock = cls(path, Perm.READ | Perm.WRITE | Perm.RESIZE, Perm.WRITE | Perm.RESIZE)
        lock.acquire()
        return lock

    def acquire(self) -> None:
        if not self.use and not self.unshare:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise BlockError(f"could not open: {exc.strerror}", self.path) from exc
        try:
            for i, perm in enumerate(_ALL):
                if self.use & perm:
                    _set(fd, _PERM_BASE + i, fcntl.F_RDLCK)
                if self.unshare & perm:
                    _set(fd, _SHARED_BASE + i, fcntl.F_RDLCK)
            for i, perm in enumerate(_ALL):
                if self.use & perm and _taken(fd, _SHARED_BASE + i):
                    raise LockedError(f'failed to get "{_NAMES[perm]}" lock: the image is '
                                      "locked; is another process using it?", self.path)
                if self.unshare & perm and _taken(fd, _PERM_BASE + i):
                    raise LockedError(f'failed to get shared "{_NAMES[perm]}" lock: the '
                                      "image is locked; is another process writing it? "
                                      "(-U reads it anyway)", self.path)
        except LockedError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.ENOLCK):
                log.warning("%s: the file system does not support locking; opened unlocked",
                            self.path)
                return
            raise BlockError(f"could not lock: {exc.strerror}", self.path) from exc
        self.fd = fd

    def release(self) -> None:
        """Drop every lock (closing the descriptor releases its OFD locks)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return f"<ImageLock {self.path!r} use={self.use!r} unshare={self.unshare!r}>"


def _set(fd: int, byte: int, kind: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))


def _taken(fd: int, byte: int) -> bool:
    """Whether another open file description holds a lock on ``byte``."""
    out = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
    return _FLOCK.unpack(out)[0] != fcntl.F_UNLCK
