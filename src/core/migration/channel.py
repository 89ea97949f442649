"""The live-migration stream and the transports that carry it.

A stream is::

    header   MAGIC, format version (u32), length (u32), the header record
             (machine, config fingerprint, page size) in :mod:`~vmforge.migration.codec`
    pages    b"P" addr (u64), count (u32) + count * 4096 bytes: a run of pages, or
             b"Z" addr (u64), count (u32): a run of zero pages
             (pages may come several times: the later copy wins)
    state    b"S" length (u32) + the run state and the machine state
             (:func:`~vmforge.migration.state.encode_state`)
    end      b"E" + CRC-32 (u32) of every byte before it

The destination checks the header against its own machine before it takes a
page and the checksum before it applies the state: a stream of another
format, another machine or configuration, cut short or corrupt is refused
with a :class:`MigrationError`, and the destination does not run.  After the
end marker a destination on a two-way transport (tcp) answers one byte, so
the source knows the guest arrived before it gives it up.

Transports: ``tcp:HOST:PORT`` (the destination listens), ``exec:CMD`` (the
stream goes to a shell command's stdin, or comes from its stdout) and
``file:PATH``.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from vmforge.errors import VmforgeError
from vmforge.migration import codec

__all__ = ["ACK", "MAGIC", "STREAM_VERSION", "MigrationError", "StreamReader", "StreamWriter",
           "Uri", "accept_incoming", "connect_outgoing", "listen_incoming", "parse_uri",
           "read_header", "write_header"]

MAGIC = b"VMFGMIG\x00"
STREAM_VERSION = 1
PAGE_SIZE = 4096
ACK = b"\x06"
_HEAD = struct.Struct("<8sII")
_ADDR = struct.Struct("<Q")
_RUN = struct.Struct("<QI")
_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 20
_MAX_STATE = 256 << 20


class MigrationError(VmforgeError):
    """A migration could not be made or a stream was refused (the text says why)."""


@dataclass(frozen=True)
class Uri:
    kind: str            # "tcp", "exec", "file"
    host: str = ""
    port: int = 0
    command: str = ""
    path: str = ""


def parse_uri(text: str) -> Uri:
    """``tcp:HOST:PORT``, ``exec:CMD``, ``file:PATH``; ValueError with QEMU's text
    for anything else."""
    kind, _, rest = text.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"address resolution failed for {rest}: invalid port")
        return Uri("tcp", host=host, port=int(port))
    if kind == "exec" and rest:
        return Uri("exec", command=rest)
    if kind == "file" and rest:
        return Uri("file", path=rest)
    raise ValueError("Parameter 'uri' expects a valid migration protocol")


# -- transports ------------------------------------------------------------------------

class _Pipe:
    """A writable or readable byte channel and what to close with it."""

    def __init__(self, stream: Any, sock: socket.socket | None = None,
                 proc: subprocess.Popen[bytes] | None = None) -> None:
        self.stream = stream
        self.sock = sock
        self.proc = proc

    def close(self) -> None:
        for step in (self.stream.close, self.sock.close if self.sock else None):
            if step is not None:
                try:
                    step()
                except OSError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def connect_outgoing(uri: Uri, timeout: float = 10.0) -> _Pipe:
    """Open the source's end; MigrationError with the reason when it cannot."""
    try:
        if uri.kind == "tcp":
            sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _Pipe(sock.makefile("rwb"), sock=sock)
        if uri.kind == "exec":
            proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdin=subprocess.PIPE)
            assert proc.stdin is not None
            return _Pipe(proc.stdin, proc=proc)
        return _Pipe(open(uri.path, "wb"))
    except ConnectionRefusedError:
        raise MigrationError(f"Failed to connect to '{uri.host}:{uri.port}': "
                             "Connection refused") from None
    except OSError as exc:
        where = f"'{uri.host}:{uri.port}'" if uri.kind == "tcp" else (uri.path or uri.command)
        raise MigrationError(f"Failed to connect to {where}: {exc.strerror or exc}") from None


def listen_incoming(uri: Uri) -> socket.socket | None:
    """The destination's listening socket for ``tcp:`` (bound now, so the source
    can connect as soon as the command returns); None for the other kinds."""
    if uri.kind != "tcp":
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in uri.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((uri.host, uri.port))
        sock.listen(1)
    except OSError as exc:
        sock.close()
        raise MigrationError(f"Failed to bind socket: {exc.strerror or exc}") from None
    return sock


def accept_incoming(uri: Uri, listener: socket.socket | None) -> _Pipe:
    """Wait for the stream: the source's connection, a command's output, a file."""
    try:
        if uri.kind == "tcp":
            assert listener is not None
            conn, _ = listener.accept()
            listener.close()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _Pipe(conn.makefile("rwb"), sock=conn)
        if uri.kind == "exec":
            proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            return _Pipe(proc.stdout, proc=proc)
        return _Pipe(open(uri.path, "rb"))
    except OSError as exc:
        raise MigrationError(f"cannot open the incoming stream: {exc.strerror or exc}") from None


# -- writing -----------------------------------------------------------------------------

class StreamWriter:
    """Buffers records, keeps the running CRC-32 and the byte count, and holds
    the pace to ``max_bandwidth`` bytes/s (0: no limit)."""

    def __init__(self, out: BinaryIO, max_bandwidth: int = 0, chunk: int = 256 << 10) -> None:
        self.out = out
        self.max_bandwidth = max_bandwidth
        self.chunk = chunk
        self.crc = 0
        self.transferred = 0
        self._buf = bytearray()
        self._t0 = time.monotonic()
        self._paced = 0

    def write(self, data: bytes | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        self.crc = zlib.crc32(data, self.crc)
        self._pace(len(data))
        self.out.write(data)
        self.out.flush()
        self.transferred += len(data)

    def _pace(self, n: int) -> None:
        if self.max_bandwidth <= 0:
            return
        self._paced += n
        due = self._t0 + self._paced / self.max_bandwidth
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1.0:            # fell behind (a stall): do not burst to catch up
            self._t0, self._paced = time.monotonic(), 0

    def pages(self, addr: int, data: memoryview | bytes, zero: bool) -> None:
        """A run of pages from ``addr``: their bytes, or (``zero``) only how many."""
        count = len(data) // PAGE_SIZE
        if zero:
            self.write(b"Z" + _RUN.pack(addr, count))
            return
        self.write(b"P" + _RUN.pack(addr, count))
        self.flush()
        data = bytes(data)      # one copy: the guest may write the RAM meanwhile
        self.crc = zlib.crc32(data, self.crc)
        self._pace(len(data))
        self.out.write(data)
        self.transferred += len(data)

    def state(self, blob: bytes) -> None:
        self.write(b"S" + _LEN.pack(len(blob)))
        self.write(blob)

    def end(self) -> None:
        self.write(b"E")
        self.flush()
        self.out.write(_LEN.pack(self.crc))
        self.out.flush()
        self.transferred += _LEN.size


def write_header(writer: StreamWriter, header: dict[str, Any]) -> None:
    body = codec.encode(header)
    writer.write(_HEAD.pack(MAGIC, STREAM_VERSION, len(body)) + body)


# -- reading -----------------------------------------------------------------------------

class StreamReader:
    """Reads records, keeping the CRC-32 of what it read; a short read is a
    :class:`MigrationError` (the stream was cut)."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.crc = 0
        self.received = 0

    def exact(self, n: int, what: str) -> bytes:
        parts, left = [], n
        while left:
            chunk = self.src.read(left)
            if not chunk:
                raise MigrationError(f"the migration stream ends early (in {what}): "
                                     "truncated")
            parts.append(chunk)
            left -= len(chunk)
        data = b"".join(parts)
        self.crc = zlib.crc32(data, self.crc)
        self.received += n
        return data

    def into(self, view: memoryview, what: str) -> None:
        """Read ``len(view)`` bytes straight into ``view`` (a RAM page)."""
        got = 0
        while got < len(view):
            n = self.src.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise MigrationError(f"the migration stream ends early (in {what}): "
                                     "truncated")
            got += n
        self.crc = zlib.crc32(view, self.crc)
        self.received += got

    def run(self) -> tuple[int, int]:
        """A page run's address and page count."""
        addr, count = _RUN.unpack(self.exact(_RUN.size, "a page address"))
        return int(addr), int(count)

    def state(self) -> bytes:
        (n,) = _LEN.unpack(self.exact(_LEN.size, "the device state"))
        if n > _MAX_STATE:
            raise MigrationError(f"the migration stream is corrupt (a state of {n} bytes)")
        return self.exact(n, "the device state")

    def check_end(self) -> None:
        crc = self.crc
        raw = self.src.read(_LEN.size)
        if len(raw) != _LEN.size:
            raise MigrationError("the migration stream ends early (in the end marker): "
                                 "truncated")
        if _LEN.unpack(raw)[0] != crc:
            raise MigrationError("the migration stream is corrupt (checksum mismatch)")


def read_header(reader: StreamReader) -> dict[str, Any]:
    """The stream's header record; MigrationError unless it is a vmforge stream of
    this format version."""
    head = reader.exact(_HEAD.size, "the header")
    magic, version, length = _HEAD.unpack(head)
    if magic != MAGIC:
        raise MigrationError("the incoming stream is not a vmforge migration stream")
    if version != STREAM_VERSION:
        raise MigrationError(f"the migration stream has format version {version}; this "
                             f"vmforge reads version {STREAM_VERSION} only")
    if length > _MAX_HEADER:
        raise MigrationError("the migration stream is corrupt (header too long)")
    try:
        header = codec.decode(reader.exact(length, "the header"))
    except MigrationError:
        raise
    except Exception as exc:  # codec's StateError and kin: a bad header
        raise MigrationError(f"the migration stream is corrupt (header: {exc})") from None
    if not isinstance(header, dict):
        raise MigrationError("the migration stream is corrupt (header)")
    return header
