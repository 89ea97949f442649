"""The file protocol's create options of qemu-img: ``extent_size_hint`` and ``nocow``.

QEMU's file-posix.c (``raw_co_create``) takes them for every format written to a
local file: the new file is emptied, ``nocow`` sets ``FS_NOCOW_FL`` (btrfs),
and the extent size hint (default 1 MiB, at most 2^32-1 bytes) is set with
``FS_IOC_FSSETXATTR`` where the filesystem keeps one (XFS); elsewhere the
ioctl fails or is ignored, and only an explicit non-zero hint that failed is
worth a warning.  Both happen before the format writes a byte: XFS takes a
hint only on a file without extents.
"""

from __future__ import annotations

import fcntl
import os
import struct

from vmforge.block.driver import parse_size
from vmforge.cli.img_words import QemuImgError, bad_size_option

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["file_protocol_options"]

_FS_IOC_FSGETXATTR = 0x801C581F      # _IOR('X', 31, struct fsxattr)
_FS_IOC_FSSETXATTR = 0x401C5820      # _IOW('X', 32, struct fsxattr)
_FS_XFLAG_EXTSIZE = 0x00000800
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_NOCOW_FL = 0x00800000
_FSXATTR = struct.Struct("<5I8x")    # xflags, extsize, nextents, projid, cowextsize
DEFAULT_EXTENT_SIZE_HINT = 1 << 20


def set_extent_size_hint(fd: int, hint: int) -> None:
    """``FS_IOC_FSSETXATTR`` with ``FS_XFLAG_EXTSIZE`` (OSError where unsupported)."""
    buf = bytearray(_FSXATTR.size)
    fcntl.ioctl(fd, _FS_IOC_FSGETXATTR, buf, True)
    fields = list(_FSXATTR.unpack(buf))
    fields[0] |= _FS_XFLAG_EXTSIZE
    fields[1] = hint
    fcntl.ioctl(fd, _FS_IOC_FSSETXATTR, _FSXATTR.pack(*fields))


def _set_nocow(fd: int) -> None:
    buf = bytearray(struct.calcsize("l"))
    fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
    flags = struct.unpack("l", buf)[0] | _FS_NOCOW_FL
    fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("l", flags))


class file_protocol_options:  # used as the function it was: ``with ... as``
    """Apply and take out ``extent_size_hint``/``nocow`` for a create of ``path``; the
    ``with`` statement gets the options left for the format.  A file made here and not
    finished (the create failed) is removed again.  (A class rather than a
    ``contextlib.contextmanager``: contextlib and the functools it imports are ~0.6 ms
    of ``convert``'s start-up.)"""

    def __init__(self, path: str, options: dict[str, Any], warn: Any = None) -> None:
        self.path, self.options, self.warn = path, options, warn
        self._made = False

    def __enter__(self) -> dict[str, Any]:
        path = self.path
        rest = dict(self.options)
        given = rest.pop("extent_size_hint", None)
        from vmforge.block.layers import is_nbd_name

        if is_nbd_name(path):       # an NBD export: no file to make (the protocol's options
            rest.pop("nocow", None)  # are the file protocol's alone)
            return rest
        nocow = str(rest.pop("nocow", "off")).lower() in ("on", "true", "yes", "1")
        hint = DEFAULT_EXTENT_SIZE_HINT
        if given is not None:
            try:
                hint = given if isinstance(given, int) else parse_size(str(given))
            except ValueError:
                raise bad_size_option("extent_size_hint", path) from None
        if hint > 0xFFFFFFFF:
            raise QemuImgError(f"{path}: Extent size hint is too large")
        if not os.path.exists(path) or os.path.isfile(path):
            self._made = not os.path.exists(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if nocow:
                    try:
                        _set_nocow(fd)
                    except OSError:
                        pass           # an optimisation only, as in QEMU
                try:
                    if os.fstat(fd).st_size == 0:
                        set_extent_size_hint(fd, hint)
                except OSError as exc:
                    if given is not None and hint and self.warn is not None:
                        self.warn(f"Failed to set extent size hint: {exc.strerror}")
            finally:
                os.close(fd)
        return rest

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if exc_type is not None and self._made and os.path.isfile(self.path):
            os.unlink(self.path)
