"""An NBD client, and the ``nbd`` block driver over it (QEMU's ``block/nbd.c``).

:class:`NbdClient` does the fixed newstyle handshake (structured replies and the
``base:allocation`` meta context when the server has them, NBD_OPT_GO, or
NBD_OPT_EXPORT_NAME with a server that lacks GO) and sends one request at a time.
:class:`NbdDriver` is a :class:`~vmforge.block.BlockDriver` over it: a disk,
``vmforge img``'s images and block jobs' targets open ``nbd://...`` names with it.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Self

from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    BlockStatus,
    Extent,
    ImageInfo,
    ReadOnlyError,
)
from vmforge.block.nbd import proto as p
from vmforge.block.nbd.proto import (
    NbdError,
    NbdProtocolError,
    recv_exact,
    recv_into,
    send_all,
)
from vmforge.block.nbd.uri import NbdAddress, parse_nbd_name

__all__ = ["NbdClient", "NbdDriver", "NbdRequestError"]

_OLDSTYLE_MAGIC = 0x00420281861253


class NbdRequestError(NbdError):
    """The server answered a request with an error."""

    def __init__(self, errno: int, message: str = "") -> None:
        self.errno = errno
        text = os.strerror(errno) if errno else "error"
        super().__init__(f"{text}{': ' + message if message else ''}")


class NbdClient:
    """One connection to an export, after its handshake."""

    def __init__(self, address: NbdAddress, *, structured: bool = True,
                 allocation: bool = True) -> None:
        self.address = address
        self.sock = address.connect()
        self.size = 0
        self.flags = 0
        self.structured = False
        self.meta_id: int | None = None
        self.max_block = p.MAX_BUFFER
        self._handle = 0
        self._lock = threading.Lock()
        self.closed = False
        try:
            self._handshake(structured, allocation)
        except BaseException:
            self.sock.close()
            raise

    # -- handshake ---------------------------------------------------------------------

    def _handshake(self, structured: bool, allocation: bool) -> None:
        magic, second = struct.unpack(">QQ", recv_exact(self.sock, 16))
        if magic != p.NBDMAGIC:
            raise NbdProtocolError("Server did not send an NBD greeting")
        if second == _OLDSTYLE_MAGIC:
            raise NbdProtocolError("the server speaks the oldstyle protocol, which "
                                   "vmforge does not")
        if second != p.IHAVEOPT:
            raise NbdProtocolError(f"Bad server magic received: {second:#x}")
        (sflags,) = struct.unpack(">H", recv_exact(self.sock, 2))
        if not sflags & p.FLAG_FIXED_NEWSTYLE:
            raise NbdProtocolError("the server lacks the fixed newstyle handshake")
        cflags = p.FLAG_C_FIXED_NEWSTYLE | (sflags & p.FLAG_NO_ZEROES)
        send_all(self.sock, struct.pack(">I", cflags))
        export = self.address.export.encode()
        if structured:
            kind, _ = self._option(p.OPT_STRUCTURED_REPLY, b"")
            self.structured = kind == p.REP_ACK
        if self.structured and allocation:
            name = p.BASE_ALLOCATION.encode()
            data = (struct.pack(">I", len(export)) + export + struct.pack(">I", 1)
                    + struct.pack(">I", len(name)) + name)
            self._send_option(p.OPT_SET_META_CONTEXT, data)
            while True:
                kind, body = self._option_reply(p.OPT_SET_META_CONTEXT)
                if kind == p.REP_META_CONTEXT and body[4:] == name:
                    self.meta_id = struct.unpack_from(">I", body)[0]
                elif kind == p.REP_ACK or kind & p.REP_FLAG_ERROR:
                    break
        data = (struct.pack(">I", len(export)) + export
                + struct.pack(">HH", 1, p.INFO_BLOCK_SIZE))
        self._send_option(p.OPT_GO, data)
        while True:
            kind, body = self._option_reply(p.OPT_GO)
            if kind == p.REP_INFO and len(body) >= 2:
                (info,) = struct.unpack_from(">H", body)
                if info == p.INFO_EXPORT and len(body) == p.EXPORT_INFO.size:
                    _, self.size, self.flags = p.EXPORT_INFO.unpack(body)
                elif info == p.INFO_BLOCK_SIZE and len(body) == p.BLOCK_SIZE_INFO.size:
                    self.max_block = min(p.MAX_BUFFER, p.BLOCK_SIZE_INFO.unpack(body)[3])
            elif kind == p.REP_ACK:
                return
            elif kind == p.REP_ERR_UNSUP:
                break
            elif kind & p.REP_FLAG_ERROR:
                detail = body.decode(errors="replace")
                if kind == p.REP_ERR_UNKNOWN:
                    raise NbdError("Requested export not available" +
                                   (f": server reported: {detail}" if detail else ""))
                raise NbdError(f"server refused the export ({kind & 0xFFFF})" +
                               (f": {detail}" if detail else ""))
        # an old server: NBD_OPT_EXPORT_NAME (no reply header; it hangs up on a bad name)
        self._send_option(p.OPT_EXPORT_NAME, export)
        try:
            self.size, self.flags = struct.unpack(">QH", recv_exact(self.sock, 10))
        except NbdError:
            raise NbdError("Requested export not available") from None
        if not sflags & p.FLAG_NO_ZEROES:
            recv_exact(self.sock, 124)

    def _send_option(self, opt: int, data: bytes) -> None:
        send_all(self.sock, p.OPTION.pack(p.IHAVEOPT, opt, len(data)), data)

    def _option_reply(self, opt: int) -> tuple[int, bytes]:
        magic, ropt, kind, length = p.OPTION_REPLY.unpack(
            recv_exact(self.sock, p.OPTION_REPLY.size))
        if magic != p.OPTION_REPLY_MAGIC or ropt != opt:
            raise NbdProtocolError("Unexpected option reply from the server")
        if length > p.MAX_OPTION:
            raise NbdProtocolError(f"option reply of {length} bytes")
        return kind, bytes(recv_exact(self.sock, length))

    def _option(self, opt: int, data: bytes) -> tuple[int, bytes]:
        self._send_option(opt, data)
        return self._option_reply(opt)

    # -- requests ----------------------------------------------------------------------

    @property
    def readonly(self) -> bool:
        return bool(self.flags & p.TF_READ_ONLY)

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def _request(self, kind: int, offset: int, length: int, flags: int = 0,
                 data: Sequence[memoryview] = ()) -> int:
        self._handle += 1
        send_all(self.sock, p.REQUEST.pack(p.REQUEST_MAGIC, flags, kind, self._handle,
                                           offset, length), *data)
        return self._handle

    def read(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the export's bytes at ``offset``."""
        with self._lock:
            done = 0
            while done < len(view):
                n = min(len(view) - done, self.max_block)
                handle = self._request(p.CMD_READ, offset + done, n)
                self._reply(handle, view[done:done + n], offset + done)
                done += n

    def write(self, offset: int, views: Sequence[memoryview], fua: bool = False) -> None:
        total = sum(len(v) for v in views)
        with self._lock:
            done = 0
            pending = list(views)
            while done < total:
                n = min(total - done, self.max_block)
                part: list[memoryview] = []
                need = n
                while need:
                    v = pending[0]
                    if len(v) <= need:
                        part.append(v)
                        pending.pop(0)
                        need -= len(v)
                    else:
                        part.append(v[:need])
                        pending[0] = v[need:]
                        need = 0
                handle = self._request(p.CMD_WRITE, offset + done, n,
                                       p.CMD_FLAG_FUA if fua else 0, part)
                self._reply(handle)
                done += n

    def command(self, kind: int, offset: int = 0, length: int = 0, flags: int = 0) -> None:
        """FLUSH, TRIM or WRITE_ZEROES (lengths beyond 32 bits sent in parts)."""
        with self._lock:
            done = 0
            while True:
                n = min(length - done, 1 << 30)
                handle = self._request(kind, offset + done, n, flags)
                self._reply(handle)
                done += n
                if done >= length:
                    return

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """(length, base:allocation flags) runs from ``offset`` (at least one)."""
        with self._lock:
            handle = self._request(p.CMD_BLOCK_STATUS, offset, min(length, 1 << 31))
            out: list[tuple[int, int]] = []
            self._reply(handle, extents=out)
        if not out or sum(n for n, _ in out) == 0:
            raise NbdProtocolError("server sent no extents")
        return out

    def _reply(self, handle: int, view: memoryview | None = None, base: int = 0,
               extents: list[tuple[int, int]] | None = None) -> None:
        (magic,) = struct.unpack(">I", recv_exact(self.sock, 4))
        if magic == p.SIMPLE_REPLY_MAGIC:
            err, rhandle = struct.unpack(">IQ", recv_exact(self.sock, 12))
            self._same(handle, rhandle)
            if err:
                raise NbdRequestError(err)
            if view is not None:
                recv_into(self.sock, view)
            return
        if magic != p.STRUCTURED_REPLY_MAGIC:
            raise NbdProtocolError(f"bad reply magic {magic:#x}")
        error: NbdRequestError | None = None
        first = True
        while True:      # chunks, each with its own header, until one says DONE
            if not first:
                (magic,) = struct.unpack(">I", recv_exact(self.sock, 4))
                if magic != p.STRUCTURED_REPLY_MAGIC:
                    raise NbdProtocolError(f"bad reply chunk magic {magic:#x}")
            first = False
            flags, kind, rhandle, length = struct.unpack(">HHQI", recv_exact(self.sock, 16))
            self._same(handle, rhandle)
            if kind == p.REPLY_TYPE_OFFSET_DATA and view is not None and length >= 8:
                (at,) = struct.unpack(">Q", recv_exact(self.sock, 8))
                n = length - 8
                if at < base or at + n > base + len(view):
                    raise NbdProtocolError("read reply outside the request")
                recv_into(self.sock, view[at - base:at - base + n])
            elif kind == p.REPLY_TYPE_OFFSET_HOLE and view is not None and length == 12:
                at, n = struct.unpack(">QI", recv_exact(self.sock, 12))
                if at < base or at + n > base + len(view):
                    raise NbdProtocolError("hole reply outside the request")
                view[at - base:at - base + n] = bytes(n)
            elif kind == p.REPLY_TYPE_BLOCK_STATUS and extents is not None and length >= 4:
                body = recv_exact(self.sock, length)
                for i in range(4, length - 7, 8):
                    extents.append(struct.unpack_from(">II", body, i))
            elif kind & (1 << 15) and length >= 6:
                body = recv_exact(self.sock, length)
                err, n = struct.unpack_from(">IH", body)
                error = NbdRequestError(err, body[6:6 + n].decode(errors="replace"))
            elif kind == p.REPLY_TYPE_NONE and length == 0:
                pass
            else:
                raise NbdProtocolError(f"unexpected reply chunk type {kind}")
            if flags & p.REPLY_FLAG_DONE:
                break
        if error is not None:
            raise error

    @staticmethod
    def _same(handle: int, rhandle: int) -> None:
        if handle != rhandle:
            raise NbdProtocolError(f"reply to request {rhandle:#x}, not {handle:#x}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with self._lock:
                self._request(p.CMD_DISC, 0, 0)
        except OSError:
            pass
        self.sock.close()


class NbdDriver(BlockDriver):
    """An NBD export as an image: the bytes of the export, as QEMU's raw over nbd."""

    format_name = "raw"
    granularity = 512

    def __init__(self, client: NbdClient, readonly: bool) -> None:
        super().__init__(client.address.filename, readonly)
        self.client = client

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        address = parse_nbd_name(path)
        try:
            client = NbdClient(address)
        except NbdError as exc:
            raise BlockError(str(exc), address.filename) from None
        except OSError as exc:
            raise BlockError(f"NBD handshake failed: {exc.strerror or exc}",
                             address.filename) from None
        if client.readonly and not readonly:
            client.close()
            raise ReadOnlyError("Could not open: the NBD export is read-only",
                                address.filename)
        return cls(client, readonly)

    @property
    def size(self) -> int:
        return self.client.size

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (NbdError, OSError) as exc:
            raise BlockError(f"NBD: {exc}", self.filename) from None

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_range(offset, sum(len(b) for b in buffers))
        for buf in buffers:
            view = memoryview(buf).cast("B")
            self._call(self.client.read, offset, view)
            offset += len(view)

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = [memoryview(b).cast("B") for b in buffers]
        self._check_range(offset, sum(len(v) for v in views))
        self._call(self.client.write, offset, views)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        if not self.client.has(p.TF_SEND_WRITE_ZEROES):
            super().write_zeroes(offset, length, may_unmap)
            return
        self._check_writable()
        self._check_range(offset, length)
        if length:
            self._call(self.client.command, p.CMD_WRITE_ZEROES, offset, length,
                       0 if may_unmap else p.CMD_FLAG_NO_HOLE)

    def discard(self, offset: int, length: int) -> None:
        self._check_writable()
        self._check_range(offset, length)
        if length and self.client.has(p.TF_SEND_TRIM):
            self._call(self.client.command, p.CMD_TRIM, offset, length)

    def flush(self) -> None:
        if not self.readonly and self.client.has(p.TF_SEND_FLUSH):
            self._call(self.client.command, p.CMD_FLUSH)

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        # an export's bytes are where they are: every extent maps to its own offset
        # (QEMU's nbd driver answers BDRV_BLOCK_OFFSET_VALID with the same offset)
        if self.client.meta_id is None:
            yield Extent(offset, length, BlockStatus.DATA | BlockStatus.ALLOCATED, offset, 0,
                         self.filename)
            return
        end = offset + length
        while offset < end:
            runs = self._call(self.client.block_status, offset, end - offset)
            for n, state in runs:
                n = min(n, end - offset)
                if n <= 0:
                    break
                status = BlockStatus.ALLOCATED
                if not state & p.STATE_HOLE:
                    status |= BlockStatus.DATA
                if state & p.STATE_ZERO:
                    status |= BlockStatus.ZERO
                yield Extent(offset, n, status, offset, 0, self.filename)
                offset += n

    def info(self) -> ImageInfo:
        return ImageInfo(self.filename, "raw", self.size, -1)    # -1: no file, no size

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                self.client.close()
