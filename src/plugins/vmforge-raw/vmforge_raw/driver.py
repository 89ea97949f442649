"""The raw format driver."""

from __future__ import annotations

import errno
import os
import stat

from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    CreateOption,
    Extent,
    ImageInfo,
)
from vmforge.block.fileio import IOV_MAX, preadv_full, punch_hole, pwritev_full
from vmforge.block.mapped import file_extents
from vmforge_raw.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, Self

#: preadv2's flag for 'only if it needs no waiting' (Linux 4.14+), or None
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)

class Raw(BlockDriver):
    """A raw image: virtual offset N is byte N of the file."""

    format_name = "raw"
    create_options = {
        "preallocation": CreateOption(
            "preallocation", str, "off",
            "off: a sparse file; falloc: reserve the blocks; full: write zeros",
            ("off", "falloc", "full"), refused="invalid parameter value: {value}"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int) -> None:
        super().__init__(filename, readonly)
        self.fd = fd
        # whole 512-byte sectors, as QEMU counts a raw file (a 123-byte file is a
        # 512-byte disk whose tail reads as zeros)
        self._size = -(-os.fstat(fd).st_size // 512) * 512

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        if size < 0:
            raise BlockError(f"size {size} is negative", path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc
        try:
            os.ftruncate(fd, size)
            if opts["preallocation"] == "falloc" and size:
                os.posix_fallocate(fd, 0, size)
            elif opts["preallocation"] == "full":
                chunk = bytes(1 << 20)
                for off in range(0, size, len(chunk)):
                    os.pwrite(fd, chunk[: min(len(chunk), size - off)], off)
                os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def measure(cls, size: int, allocated: Sequence[tuple[int, int]] | None,
                **options: Any) -> dict[str, int]:
        """A raw image is as large as the disk (rounded up to a sector, as qemu-img)."""
        cls.parse_create_options(options)
        whole = (size + 511) // 512 * 512
        return {"required": whole, "fully-allocated": whole}

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        try:
            fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except OSError as exc:
            raise BlockError(f"cannot open: {exc.strerror}", path) from exc
        return cls(path, readonly, fd)

    @property
    def size(self) -> int:
        return self._size

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_range(offset, sum(memoryview(b).nbytes for b in buffers))
        preadv_full(self.fd, offset, buffers)  # past a file that shrank: zeros

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run with one ``preadv`` (what ``convert`` reads a buffer's worth
        with): no per-call bookkeeping but the range check."""
        fd = self.fd
        for offset, buf in runs:
            n = buf.nbytes
            self._check_range(offset, n)
            if os.preadv(fd, [buf], offset) != n:
                preadv_full(fd, offset, [buf])   # short (past the end): zeros

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run with one ``pwritev`` (``convert``'s writing thread)."""
        self._check_writable()
        fd = self.fd
        for offset, data in runs:
            n = data.nbytes
            self._check_range(offset, n)
            done = os.pwritev(fd, [data], offset)
            if done != n:
                pwritev_full(fd, offset + done, [data[done:]])

    def preadv_nowait(self, offset: int, buffers: Sequence[memoryview]) -> bool:
        if _RWF_NOWAIT is None:
            return False
        total = sum(memoryview(b).nbytes for b in buffers)
        self._check_range(offset, total)
        if len(buffers) > IOV_MAX or offset + total > os.fstat(self.fd).st_size:
            return False            # past the end of the file: zeros, the slow path
        try:
            n = os.preadv(self.fd, buffers, offset, _RWF_NOWAIT)
        except (BlockingIOError, OSError):
            return False            # not cached (EAGAIN), or no RWF_NOWAIT here
        return n == total

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        self._check_range(offset, sum(memoryview(b).nbytes for b in buffers))
        pwritev_full(self.fd, offset, buffers)

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        yield from file_extents(self.fd, offset, length, self.filename)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        if may_unmap and length and punch_hole(self.fd, offset, length):
            return
        super().write_zeroes(offset, length, may_unmap)

    def discard(self, offset: int, length: int) -> None:
        self._check_writable()
        self._check_range(offset, length)
        if length:
            punch_hole(self.fd, offset, length)

    def flush(self) -> None:
        if not self.readonly and self.sync:
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                if exc.errno != errno.EINVAL:   # (device files such as /dev/null)
                    raise BlockError(f"flush failed: {exc.strerror}", self.filename) from exc

    def truncate(self, size: int) -> None:
        self._check_writable()
        if size < 0:
            raise BlockError(f"size {size} is negative", self.filename)
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            raise BlockError("cannot resize device files", self.filename)
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise BlockError(f"cannot resize: {exc.strerror or exc}", self.filename) from exc
        self._size = size

    def info(self) -> ImageInfo:
        st = os.fstat(self.fd)
        return ImageInfo(self.filename, self.format_name, self._size, st.st_blocks * 512)

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self.fd)
