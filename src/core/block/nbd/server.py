"""An NBD server exporting BlockBackends (QEMU's ``nbd/server.c``, in its 7.2 behaviour).

The fixed newstyle handshake with NBD_OPT_GO/INFO/LIST/ABORT/EXPORT_NAME,
structured replies and the ``base:allocation`` meta context; then
READ/WRITE/FLUSH/TRIM/WRITE_ZEROES/BLOCK_STATUS/DISC.  Each client is served on a
thread of its own (never a vCPU's), one request at a time; a request that breaks
the rules gets the protocol's error (EINVAL, ENOSPC past the end of a write,
EPERM on a read-only export) and the client is dropped only where the stream can
no longer be followed (bad magic, a write payload too large to take), so one
misbehaving client never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vmforge.block.nbd import proto as p
from vmforge.block.nbd.proto import NbdError, recv_exact, recv_into, send_all
from vmforge.block.nbd.uri import NbdAddress

__all__ = ["NbdExport", "NbdServer"]

log = logging.getLogger(__name__)

#: meta context id of base:allocation (QEMU's NBD_META_ID_BASE_ALLOCATION)
BASE_ALLOCATION_ID = 0
#: the most extents one BLOCK_STATUS reply carries
MAX_EXTENTS = 1 << 16
#: block sizes announced (minimum, preferred, maximum), as QEMU's
BLOCK_SIZES = (1, 4096, p.MAX_BUFFER)


@dataclass(eq=False)
class NbdExport:
    """A BlockBackend served under ``name``."""

    name: str
    backend: Any
    writable: bool = False
    description: str = ""
    clients: set[_Client] = field(default_factory=set)
    #: the block export id QMP knows it by (QEMU's ``id``; nbd-server-add: the name)
    ident: str = ""

    @property
    def flags(self) -> int:
        """Transmission flags as QEMU 7.2's server sets them (``nbd_export_create``);
        the server adds CAN_MULTI_CONN unless it takes one connection at a time, and
        DF per client, once it has structured replies."""
        flags = p.TF_HAS_FLAGS | p.TF_SEND_FLUSH | p.TF_SEND_FUA | p.TF_SEND_CACHE
        if self.writable:
            flags |= p.TF_SEND_TRIM | p.TF_SEND_WRITE_ZEROES | p.TF_SEND_FAST_ZERO
        else:
            flags |= p.TF_READ_ONLY
        return flags


class NbdServer:
    """Listens on ``address`` (TCP or a UNIX socket) and serves its exports."""

    def __init__(self, address: NbdAddress, max_connections: int = 0) -> None:
        self.address = address
        self.max_connections = max_connections
        self.exports: dict[str, NbdExport] = {}
        self._lock = threading.Lock()
        self._full = threading.Condition(self._lock)
        self._clients: set[_Client] = set()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._made_socket_file = False

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        a = self.address
        if a.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(a.path)
            except OSError as exc:
                sock.close()
                raise NbdError(f"Failed to bind socket to {a.path}: "
                               f"{exc.strerror or exc}") from None
            self._made_socket_file = True
        else:
            try:
                infos = socket.getaddrinfo(a.host, a.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise NbdError(f"address resolution failed for {a.host}:{a.port}: "
                               f"{exc.strerror or exc}") from None
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                sock.close()
                raise NbdError("Failed to find an available port: "
                               f"{exc.strerror or exc}") from None
        sock.listen(16)
        self._sock = sock
        if a.path is None:
            self.address = NbdAddress("", host=a.host, port=sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="nbd-server",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every client."""
        with self._lock:
            sock, self._sock = self._sock, None
            self._full.notify_all()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            clients = list(self._clients)
            self.exports.clear()
        for c in clients:
            c.close()
        for c in clients:
            c.join()
        if self._made_socket_file and self.address.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.address.path)
            self._made_socket_file = False

    # -- exports -----------------------------------------------------------------------

    def add_export(self, name: str, backend: Any, *, writable: bool = False,
                   description: str = "", ident: str | None = None) -> NbdExport:
        if len(name.encode()) > p.MAX_STRING:
            raise NbdError(f"export name '{name[:32]}...' too long")
        with self._lock:
            if name in self.exports:
                raise NbdError(f"NBD server already has export named '{name}'")
            if writable and backend.readonly:
                raise NbdError("Cannot export read-only node as writable")
            exp = self.exports[name] = NbdExport(name, backend, writable, description,
                                                 ident=name if ident is None else ident)
        return exp

    def remove_export(self, name: str, hard: bool = False) -> None:
        with self._lock:
            exp = self.exports.get(name)
            if exp is None:
                raise NbdError(f"Export '{name}' is not found")
            if exp.clients and not hard:
                raise NbdError(f"export '{name}' still in use")
            del self.exports[name]
            clients = list(exp.clients)
        for c in clients:
            c.close()

    # -- clients -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            with self._full:        # max-connections reached: stop accepting (as QEMU)
                while (self._sock is not None and self.max_connections
                       and len(self._clients) >= self.max_connections):
                    self._full.wait()
                sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                client = _Client(self, conn)
                self._clients.add(client)
            client.start()

    def _export(self, name: str) -> NbdExport | None:
        with self._lock:
            return self.exports.get(name)

    def _attach(self, client: _Client, exp: NbdExport) -> bool:
        with self._lock:
            if self.exports.get(exp.name) is not exp:
                return False
            exp.clients.add(client)
            return True

    def _gone(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)
            if client.export is not None:
                client.export.clients.discard(client)
            self._full.notify_all()


class _Drop(Exception):
    """End this client's connection (a protocol breach, or it left)."""


class _Client:
    """One connection: the handshake, then its requests, on its own thread."""

    def __init__(self, server: NbdServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.export: NbdExport | None = None
        self.structured = False
        self.no_zeroes = False
        self.meta: dict[str, int] = {}          # {"base:allocation": id} once set
        self._thread = threading.Thread(target=self._run, name="nbd-client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            if self._handshake():
                self._transmission()
        except (_Drop, NbdError, OSError) as exc:
            log.debug("nbd client dropped: %s", exc)
        except Exception:     # never let a client take the server down
            log.exception("nbd client failed")
        finally:
            self.server._gone(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    # -- handshake ---------------------------------------------------------------------

    def _handshake(self) -> bool:
        send_all(self.sock, struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT,
                                        p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES))
        (cflags,) = struct.unpack(">I", recv_exact(self.sock, 4))
        if cflags & ~(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES):
            raise _Drop(f"unknown client flags {cflags:#x}")
        self.no_zeroes = bool(cflags & p.FLAG_C_NO_ZEROES)
        while True:
            magic, opt, length = p.OPTION.unpack(recv_exact(self.sock, p.OPTION.size))
            if magic != p.IHAVEOPT:
                raise _Drop("bad option magic")
            if length > p.MAX_OPTION:
                self._discard(length)
                self._reply_error(opt, p.REP_ERR_TOO_BIG, "option too large")
                continue
            data = bytes(recv_exact(self.sock, length))
            if opt == p.OPT_EXPORT_NAME:
                exp = self.server._export(data.decode(errors="replace"))
                if exp is None or not self.server._attach(self, exp):
                    raise _Drop("EXPORT_NAME of an unknown export")
                self.export = exp
                tail = b"" if self.no_zeroes else bytes(124)
                send_all(self.sock, struct.pack(">QH", exp.backend.size, self._flags(exp)) + tail)
                return True
            if opt == p.OPT_ABORT:
                self._reply(opt, p.REP_ACK)
                return False
            if opt == p.OPT_GO or opt == p.OPT_INFO:
                if self._info(opt, data):
                    return True
            elif opt == p.OPT_LIST:
                self._list(opt, data)
            elif opt == p.OPT_STRUCTURED_REPLY:
                if data:
                    self._reply_error(opt, p.REP_ERR_INVALID, "no payload expected")
                elif self.structured:
                    self._reply_error(opt, p.REP_ERR_INVALID,
                                      "structured reply already negotiated")
                else:
                    self.structured = True
                    self._reply(opt, p.REP_ACK)
            elif opt in (p.OPT_LIST_META_CONTEXT, p.OPT_SET_META_CONTEXT):
                self._meta_context(opt, data)
            elif opt == p.OPT_STARTTLS:
                self._reply_error(opt, p.REP_ERR_POLICY, "TLS not configured")
            else:
                self._reply_error(opt, p.REP_ERR_UNSUP, f"Unsupported option {opt:#x}")

    def _discard(self, length: int) -> None:
        if length > p.MAX_BUFFER:
            raise _Drop(f"option of {length} bytes")
        while length:
            length -= len(recv_exact(self.sock, min(length, 1 << 16)))

    def _flags(self, exp: NbdExport) -> int:
        return (exp.flags | (p.TF_SEND_DF if self.structured else 0)
                | (p.TF_CAN_MULTI_CONN if self.server.max_connections != 1 else 0))

    def _reply(self, opt: int, kind: int, data: bytes = b"") -> None:
        send_all(self.sock, p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, opt, kind, len(data)), data)

    def _reply_error(self, opt: int, kind: int, message: str) -> None:
        self._reply(opt, kind, message.encode())

    def _name_and_rest(self, data: bytes) -> tuple[str, bytes] | None:
        if len(data) < 4:
            return None
        (n,) = struct.unpack_from(">I", data)
        if n > p.MAX_STRING or 4 + n > len(data):
            return None
        return data[4:4 + n].decode(errors="replace"), data[4 + n:]

    def _info(self, opt: int, data: bytes) -> bool:
        parsed = self._name_and_rest(data)
        if parsed is None or len(parsed[1]) < 2:
            self._reply_error(opt, p.REP_ERR_INVALID, "request data too short")
            return False
        name, rest = parsed
        (count,) = struct.unpack_from(">H", rest)
        if len(rest) != 2 + 2 * count:
            self._reply_error(opt, p.REP_ERR_INVALID, "request data has wrong length")
            return False
        wanted = set(struct.unpack_from(f">{count}H", rest, 2))
        exp = self.server._export(name)
        if exp is None:
            self._reply_error(opt, p.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return False
        if p.INFO_NAME in wanted:
            self._reply(opt, p.REP_INFO, struct.pack(">H", p.INFO_NAME) + name.encode())
        if p.INFO_DESCRIPTION in wanted and exp.description:
            self._reply(opt, p.REP_INFO,
                        struct.pack(">H", p.INFO_DESCRIPTION) + exp.description.encode())
        self._reply(opt, p.REP_INFO, p.BLOCK_SIZE_INFO.pack(p.INFO_BLOCK_SIZE, *BLOCK_SIZES))
        self._reply(opt, p.REP_INFO,
                    p.EXPORT_INFO.pack(p.INFO_EXPORT, exp.backend.size, self._flags(exp)))
        if opt == p.OPT_INFO:
            self._reply(opt, p.REP_ACK)
            return False
        if not self.server._attach(self, exp):
            self._reply_error(opt, p.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return False
        self._reply(opt, p.REP_ACK)
        self.export = exp
        return True

    def _list(self, opt: int, data: bytes) -> None:
        if data:
            self._reply_error(opt, p.REP_ERR_INVALID, "no payload expected")
            return
        with self.server._lock:
            exports = list(self.server.exports.values())
        for exp in exports:
            name = exp.name.encode()
            self._reply(opt, p.REP_SERVER,
                        struct.pack(">I", len(name)) + name + exp.description.encode())
        self._reply(opt, p.REP_ACK)

    def _parse_meta(self, data: bytes) -> tuple[str, list[str]] | None:
        parsed = self._name_and_rest(data)
        if parsed is None or len(parsed[1]) < 4:
            return None
        name, rest = parsed
        (count,) = struct.unpack_from(">I", rest)
        pos, queries = 4, []
        for _ in range(count):
            if pos + 4 > len(rest):
                return None
            (n,) = struct.unpack_from(">I", rest, pos)
            if n > p.MAX_STRING or pos + 4 + n > len(rest):
                return None
            queries.append(rest[pos + 4:pos + 4 + n].decode(errors="replace"))
            pos += 4 + n
        return (name, queries) if pos == len(rest) else None

    def _meta_context(self, opt: int, data: bytes) -> None:
        parsed = self._parse_meta(data)
        if parsed is None:
            self._reply_error(opt, p.REP_ERR_INVALID, "invalid meta context request")
            return
        name, queries = parsed
        if opt == p.OPT_SET_META_CONTEXT and not self.structured:
            self._reply_error(opt, p.REP_ERR_INVALID,
                              "request option 'NBD_OPT_SET_META_CONTEXT' when structured "
                              "reply is not negotiated")
            return
        if self.server._export(name) is None:
            self._reply_error(opt, p.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return
        listing = opt == p.OPT_LIST_META_CONTEXT
        match = (not queries and listing) or any(
            q == p.BASE_ALLOCATION or (listing and q == "base:") for q in queries)
        if opt == p.OPT_SET_META_CONTEXT:
            self.meta = {p.BASE_ALLOCATION: BASE_ALLOCATION_ID} if match else {}
        if match:
            self._reply(opt, p.REP_META_CONTEXT,
                        struct.pack(">I", BASE_ALLOCATION_ID) + p.BASE_ALLOCATION.encode())
        self._reply(opt, p.REP_ACK)

    # -- transmission ------------------------------------------------------------------

    def _transmission(self) -> None:
        header = memoryview(bytearray(p.REQUEST.size))
        while True:
            recv_into(self.sock, header)
            magic, flags, kind, handle, offset, length = p.REQUEST.unpack(header)
            if magic != p.REQUEST_MAGIC:
                raise _Drop(f"bad request magic {magic:#x}")
            if kind == p.CMD_DISC:
                return
            payload: bytearray | None = None
            if kind == p.CMD_WRITE:
                if length > p.MAX_BUFFER:
                    self._error(handle, p.EINVAL, f"len ({length}) is larger than max len")
                    raise _Drop("write payload too large to take")
                payload = recv_exact(self.sock, length)
            exp = self.export
            assert exp is not None
            if exp.name not in self.server.exports:
                self._error(handle, p.ESHUTDOWN, "export removed")
                raise _Drop("export removed")
            err = self._check(exp, kind, flags, offset, length)
            if err:
                self._error(handle, err[0], err[1])
                continue
            try:
                self._serve(exp, kind, flags, handle, offset, length, payload)
            except (OSError, _Drop):
                raise
            except Exception as exc:       # an I/O error of the image: EIO to the client
                log.warning("nbd export %s: %s", exp.name, exc)
                self._error(handle, p.EIO, str(exc))

    def _check(self, exp: NbdExport, kind: int, flags: int, offset: int,
               length: int) -> tuple[int, str] | None:
        valid = p.CMD_FLAG_FUA
        if kind == p.CMD_READ:
            valid = p.CMD_FLAG_FUA | p.CMD_FLAG_DF
        elif kind == p.CMD_WRITE_ZEROES:
            valid = p.CMD_FLAG_FUA | p.CMD_FLAG_NO_HOLE | p.CMD_FLAG_FAST_ZERO
        elif kind == p.CMD_CACHE:
            valid = 0
        elif kind == p.CMD_BLOCK_STATUS:
            valid = p.CMD_FLAG_REQ_ONE
        elif kind not in (p.CMD_WRITE, p.CMD_FLUSH, p.CMD_TRIM):
            return p.EINVAL, f"unsupported command {kind}"
        if flags & ~valid:
            return p.EINVAL, f"unsupported flags {flags:#x}"
        if flags & p.CMD_FLAG_DF and not self.structured:
            return p.EINVAL, "DF flag needs structured replies"
        if kind == p.CMD_READ and length > p.MAX_BUFFER:
            return p.EINVAL, f"len ({length}) is larger than max len"
        size = exp.backend.size
        if kind != p.CMD_FLUSH and (offset > size or length > size - offset):
            return (p.ENOSPC if kind in (p.CMD_WRITE, p.CMD_WRITE_ZEROES) else p.EINVAL,
                    "operation past EOF")
        if kind in (p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES) and not exp.writable:
            return p.EPERM, "export is read-only"
        if kind == p.CMD_BLOCK_STATUS and (not self.structured or not self.meta):
            return p.EINVAL, "need to negotiate structured replies and a meta context"
        if kind == p.CMD_WRITE_ZEROES and flags & p.CMD_FLAG_FAST_ZERO:
            # the block layer cannot promise a zeroing faster than writing: say so at
            # once, as the protocol asks (the client then writes or skips the zeros)
            return p.ENOTSUP, "fast zeroing is not supported"
        return None

    def _serve(self, exp: NbdExport, kind: int, flags: int, handle: int, offset: int,
               length: int, payload: bytearray | None) -> None:
        bb = exp.backend
        if kind == p.CMD_READ:
            buf = bytearray(length)
            if length:
                bb.readinto(offset, buf)
            if self.structured and length:
                send_all(self.sock, p.STRUCTURED_REPLY.pack(
                    p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_OFFSET_DATA,
                    handle, 8 + length), struct.pack(">Q", offset), buf)
            else:
                send_all(self.sock, p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, handle), buf)
            return
        if kind == p.CMD_WRITE:
            assert payload is not None
            if length:
                bb.write(offset, payload)
        elif kind == p.CMD_TRIM:
            if length:
                bb.discard(offset, length)
        elif kind == p.CMD_WRITE_ZEROES:
            if length:
                bb.write_zeroes(offset, length, may_unmap=not flags & p.CMD_FLAG_NO_HOLE)
        elif kind == p.CMD_BLOCK_STATUS:
            self._block_status(bb, handle, offset, length, bool(flags & p.CMD_FLAG_REQ_ONE))
            return
        elif kind == p.CMD_CACHE:
            pass        # a hint to read ahead: the host's page cache does that already
        if kind == p.CMD_FLUSH or flags & p.CMD_FLAG_FUA:
            bb.flush()
        self._done(handle)

    def _block_status(self, bb: Any, handle: int, offset: int, length: int,
                      one: bool) -> None:
        pairs: list[tuple[int, int]] = []
        for ext in _extents(bb, offset, length):
            state = (0 if ext[1] else p.STATE_HOLE) | (p.STATE_ZERO if ext[2] else 0)
            if pairs and pairs[-1][1] == state and pairs[-1][0] + ext[0] < 1 << 32:
                pairs[-1] = (pairs[-1][0] + ext[0], state)
                continue
            if (one and pairs) or len(pairs) >= MAX_EXTENTS:
                break
            pairs.append((ext[0], state))
        if one:
            pairs = pairs[:1]
        body = struct.pack(">I", BASE_ALLOCATION_ID) + b"".join(
            struct.pack(">II", n, s) for n, s in pairs)
        send_all(self.sock, p.STRUCTURED_REPLY.pack(
            p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_BLOCK_STATUS, handle,
            len(body)), body)

    def _done(self, handle: int) -> None:
        if self.structured:
            send_all(self.sock, p.STRUCTURED_REPLY.pack(
                p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_NONE, handle, 0))
        else:
            send_all(self.sock, p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, handle))

    def _error(self, handle: int, errno: int, message: str) -> None:
        log.debug("nbd request %#x: %s", handle, message)
        if self.structured:
            text = message.encode()[:4096]
            body = struct.pack(">IH", errno, len(text)) + text
            send_all(self.sock, p.STRUCTURED_REPLY.pack(
                p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_ERROR, handle,
                len(body)), body)
        else:
            send_all(self.sock, p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, errno, handle))


def _extents(bb: Any, offset: int, length: int) -> Iterator[tuple[int, bool, bool]]:
    """(length, data, zero) runs of ``bb`` over the range, clipped to it."""
    end = offset + length
    for ext in bb.block_status(offset, length):
        start, stop = max(ext.offset, offset), min(ext.end, end)
        if stop > start:
            yield stop - start, ext.is_data, ext.is_zero
