"""``-netdev socket``: frames over a TCP stream or UDP datagrams (QEMU's net/socket.c).

- ``listen=[HOST]:PORT``: wait for one TCP connection (an empty host listens on
  every address); when it closes, wait for the next.
- ``connect=HOST:PORT``: connect at start-up to a ``listen`` side.
- ``udp=HOST:PORT,localaddr=HOST:PORT``: one datagram per frame, sent to
  ``udp=`` from ``localaddr=``.

On a TCP stream each frame is preceded by its length as 4 bytes big-endian, as
QEMU writes it, so two vmforge machines, or vmforge and QEMU, can be joined::

    vmforge run ... -netdev socket,id=n0,listen=127.0.0.1:10000
    qemu-system-riscv64 ... -netdev socket,id=n0,connect=127.0.0.1:10000

A frame longer than :data:`~vmforge.net.backend.MAX_FRAME` on the stream ends
the connection (QEMU does the same).  While nothing is connected, guest frames
are dropped, as on an unplugged cable.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, ClassVar

from vmforge.net.backend import MAX_FRAME, Frame, NetdevError
from vmforge.net.fdnet import POLLIN, FdNet

__all__ = ["SocketNet", "parse_host_port"]

log = logging.getLogger("vmforge.net")

LENGTH_BYTES = 4
CONNECT_TIMEOUT = 10.0


def parse_host_port(text: str, what: str, *, passive: bool = False,
                    kind: int = socket.SOCK_STREAM) -> tuple[int, tuple[Any, ...]]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> ``(family, sockaddr)``; an empty host is
    every address when ``passive``, else an error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NetdevError(f"{what}={text}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host and not passive:
        raise NetdevError(f"{what}={text}: a host is needed")
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host or None, int(port), socket.AF_UNSPEC, kind, 0, flags)
    except socket.gaierror as exc:
        raise NetdevError(f"{what}={text}: {exc.strerror}") from exc
    family, _type, _proto, _name, addr = infos[0]
    return family, addr


class SocketNet(FdNet):
    """A socket back-end: TCP (``listen``/``connect``) or UDP (``udp``/``localaddr``)."""

    type: ClassVar[str] = "socket"
    options: ClassVar[tuple[str, ...]] = ("listen", "connect", "udp", "localaddr")

    def __init__(self, id: str = "", *, listen: str = "", connect: str = "", udp: str = "",
                 localaddr: str = "",
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().__init__(id, dispatch=dispatch)
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._peer: tuple[Any, ...] | None = None
        self._rbuf = bytearray()
        chosen = [k for k, v in (("listen", listen), ("connect", connect), ("udp", udp)) if v]
        self.mode = chosen[0] if chosen else ""
        self.stream = self.mode != "udp"
        where = f"-netdev socket,id={self.id}"
        try:
            if len(chosen) != 1:
                raise NetdevError(f"{where}: exactly one of listen=, connect=, udp= is needed")
            if localaddr and not udp:
                raise NetdevError(f"{where}: localaddr= goes with udp=")
            if self.mode == "listen":
                self._open_listener(listen)
            elif self.mode == "connect":
                self._connect(connect)
            else:
                if not localaddr:
                    raise NetdevError(f"{where}: udp= needs localaddr=")
                self._open_udp(udp, localaddr)
        except OSError as exc:
            self.close()
            raise NetdevError(f"{where}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise
        self.start()

    # -- opening -----------------------------------------------------------------------

    def _open_listener(self, text: str) -> None:
        family, addr = parse_host_port(text, "listen", passive=True)
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._listener = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1)
        sock.setblocking(False)

    def _connect(self, text: str) -> None:
        family, addr = parse_host_port(text, "connect")
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        self._take_connection(sock)

    def _open_udp(self, remote: str, local: str) -> None:
        family, raddr = parse_host_port(remote, "udp", kind=socket.SOCK_DGRAM)
        lfamily, laddr = parse_host_port(local, "localaddr", passive=True,
                                         kind=socket.SOCK_DGRAM)
        if lfamily != family:
            raise NetdevError(f"udp={remote}, localaddr={local}: address families differ")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self._conn = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(laddr)
        sock.setblocking(False)
        self._peer = raddr

    def _take_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rbuf = bytearray()
        with self._wlock:
            self._conn = sock
        log.info("netdev %s: connected to %s", self.id, sock.getpeername())

    @property
    def address(self) -> tuple[Any, ...]:
        """The local address (``listen`` with port 0 gets one from the kernel)."""
        sock = self._listener or self._conn
        if sock is None:
            raise NetdevError(f"netdev {self.id}: closed")
        return tuple(sock.getsockname())

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # -- FdNet hooks -----------------------------------------------------------------------

    def _io_fd(self) -> int | None:
        conn = self._conn
        return None if conn is None else conn.fileno()

    def _wire(self, frame: Frame, length: int) -> Frame:
        if not self.stream:
            return frame
        return [length.to_bytes(LENGTH_BYTES, "big"), *frame]

    def _write_now(self, parts: Frame) -> int:
        conn = self._conn
        if conn is None:
            raise BlockingIOError
        if self.stream:
            return conn.sendmsg(parts)
        return conn.sendmsg(parts, [], 0, self._peer)

    def _extra_fds(self) -> list[tuple[int, int]]:
        if self._listener is not None and self._conn is None:
            return [(self._listener.fileno(), POLLIN)]
        return []

    def _extra_event(self, fd: int, events: int) -> None:
        assert self._listener is not None
        try:
            sock, _addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("netdev %s: accept: %s", self.id, exc)
            return
        self._take_connection(sock)

    def _read_ready(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            data = conn.recv(MAX_FRAME + LENGTH_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self.stream:
                self._disconnect(str(exc))
            else:
                log.debug("netdev %s: %s", self.id, exc)  # ICMP unreachable on UDP
            return
        if not self.stream:
            self._arrived(data)
            return
        if not data:
            self._disconnect("connection closed by peer")
            return
        buf = self._rbuf
        buf += data
        pos = 0
        while len(buf) - pos >= LENGTH_BYTES:
            size = int.from_bytes(buf[pos:pos + LENGTH_BYTES], "big")
            if size > MAX_FRAME:
                self._disconnect(f"frame of {size} bytes is too long")
                return
            end = pos + LENGTH_BYTES + size
            if len(buf) < end:
                break
            if size:
                self._arrived(bytes(buf[pos + LENGTH_BYTES:end]))
            pos = end
        del buf[:pos]

    def _disconnect(self, why: str) -> None:
        log.info("netdev %s: %s", self.id, why)
        with self._wlock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._rbuf = bytearray()
        self._drop_output()

    def _io_error(self, exc: OSError) -> None:
        if self.stream:
            self._disconnect(str(exc))
        else:
            log.debug("netdev %s: %s", self.id, exc)

    # -- life cycle ---------------------------------------------------------------------

    def _release(self) -> None:
        for sock in (self._conn, self._listener):
            if sock is not None:
                sock.close()
        self._conn = self._listener = None

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        with self._wlock:
            self._release()
