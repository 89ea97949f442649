"""Malformed NBD traffic against vmforge's server: each bad request gets the protocol's
error, or its client is dropped where the stream cannot be followed; the server keeps
serving the others (checked with qemu-io after each)."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading

import pytest

from tests.block.nbdtools import serving
from vmforge.block.nbd import proto as p
from vmforge.testing.oracles import require_program

SIZE = 8 << 20


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "d.raw")
    with open(path, "wb") as f:
        f.write(b"\xab" * SIZE)
    with serving(path, "raw") as (srv, uri):
        yield srv, uri


def others_served(uri: str) -> None:
    qemu_io = require_program("qemu-io", "qemu-utils")
    r = subprocess.run([qemu_io, "-f", "raw", "-r", "-c", "read -P 0xab 1M 64k", uri],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr


def connect(srv) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.address.port), 10)
    s.settimeout(10)
    return s


def recvn(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        k = s.recv(n - len(out))
        if not k:
            raise EOFError
        out += k
    return out


def closed(s: socket.socket) -> bool:
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True


def greet(s: socket.socket) -> None:
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert (magic, opt) == (p.NBDMAGIC, p.IHAVEOPT)
    assert flags & p.FLAG_FIXED_NEWSTYLE
    s.sendall(struct.pack(">I", p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES))


def option(s: socket.socket, opt: int, data: bytes) -> tuple[int, bytes]:
    s.sendall(p.OPTION.pack(p.IHAVEOPT, opt, len(data)) + data)
    return reply(s, opt)


def reply(s: socket.socket, opt: int) -> tuple[int, bytes]:
    magic, ropt, kind, n = p.OPTION_REPLY.unpack(recvn(s, p.OPTION_REPLY.size))
    assert magic == p.OPTION_REPLY_MAGIC and ropt == opt
    return kind, recvn(s, n)


def attach(s: socket.socket) -> int:
    """EXPORT_NAME (simple replies); the export's size."""
    greet(s)
    s.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_EXPORT_NAME, 3) + b"exp")
    size, flags = struct.unpack(">QH", recvn(s, 10))
    assert not flags & p.TF_READ_ONLY
    return size


def request(s: socket.socket, kind: int, offset: int, length: int, flags: int = 0,
            handle: int = 7, data: bytes = b"") -> int:
    s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, flags, kind, handle, offset, length) + data)
    magic, err, h = p.SIMPLE_REPLY.unpack(recvn(s, p.SIMPLE_REPLY.size))
    assert magic == p.SIMPLE_REPLY_MAGIC and h == handle
    return err


def test_handshake_abuse(server):
    srv, uri = server
    with connect(srv) as s:                       # unknown client flags
        recvn(s, 18)
        s.sendall(struct.pack(">I", 0xFFFF0000))
        assert closed(s)
    with connect(srv) as s:                       # bad option magic
        greet(s)
        s.sendall(struct.pack(">QII", 0x1234, p.OPT_GO, 0))
        assert closed(s)
    with connect(srv) as s:
        greet(s)
        assert option(s, 99, b"")[0] == p.REP_ERR_UNSUP
        assert option(s, p.OPT_GO, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))[0] \
            == p.REP_ERR_UNKNOWN
        assert option(s, p.OPT_GO, struct.pack(">I", 400) + b"x")[0] == p.REP_ERR_INVALID
        assert option(s, p.OPT_LIST, b"junk")[0] == p.REP_ERR_INVALID
        assert option(s, p.OPT_SET_META_CONTEXT, b"")[0] == p.REP_ERR_INVALID
        assert option(s, p.OPT_STARTTLS, b"")[0] == p.REP_ERR_POLICY
        assert option(s, p.OPT_STRUCTURED_REPLY, b"x")[0] == p.REP_ERR_INVALID
        assert option(s, p.OPT_INFO, b"\xff" * 100000)[0] == p.REP_ERR_TOO_BIG
        kind, body = option(s, p.OPT_LIST, b"")
        assert kind == p.REP_SERVER and body == struct.pack(">I", 3) + b"exp"
        assert reply(s, p.OPT_LIST)[0] == p.REP_ACK
        assert option(s, p.OPT_ABORT, b"")[0] == p.REP_ACK
        assert closed(s)
    with connect(srv) as s:                       # a 1 GiB option: dropped, not read
        greet(s)
        s.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_GO, 1 << 30) + b"abc")
        assert closed(s)
    with connect(srv) as s:                       # EXPORT_NAME of an unknown export
        greet(s)
        s.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_EXPORT_NAME, 2) + b"no")
        assert closed(s)
    with connect(srv) as s:                       # gone in the middle of the greeting
        recvn(s, 5)
    others_served(uri)


def test_request_errors(server):
    srv, uri = server
    with connect(srv) as s:
        assert attach(s) == SIZE
        assert request(s, p.CMD_READ, SIZE - 512, 1024) == p.EINVAL
        assert request(s, p.CMD_READ, 1 << 62, 1) == p.EINVAL
        assert request(s, p.CMD_READ, 0, 0xFFFFFFFF) == p.EINVAL          # huge length
        assert request(s, p.CMD_WRITE, SIZE - 2, 4, data=b"zzzz") == p.ENOSPC
        assert request(s, p.CMD_WRITE_ZEROES, SIZE, 1) == p.ENOSPC
        assert request(s, p.CMD_TRIM, SIZE - 1, 2) == p.EINVAL
        assert request(s, p.CMD_BLOCK_STATUS, 0, 512) == p.EINVAL          # not negotiated
        assert request(s, p.CMD_READ, 0, 512, flags=p.CMD_FLAG_DF) == p.EINVAL
        assert request(s, p.CMD_READ, 0, 512, flags=0x80) == p.EINVAL
        assert request(s, 99, 0, 512) == p.EINVAL
        # the connection is still in step: a good read and a good write
        assert request(s, p.CMD_WRITE, 4096, 4, data=b"good") == 0
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 8, 4096, 4))
        assert recvn(s, 16)[4:8] == bytes(4) and recvn(s, 4) == b"good"
        assert request(s, p.CMD_FLUSH, 0, 0) == 0
    with connect(srv) as s:                       # a write too large to take: dropped
        attach(s)
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 1, 0, 0xFFFFFFFF))
        assert p.SIMPLE_REPLY.unpack(recvn(s, 16))[1] == p.EINVAL
        assert closed(s)
    with connect(srv) as s:                       # bad request magic
        attach(s)
        s.sendall(b"\x00" * 28)
        assert closed(s)
    with connect(srv) as s:                       # gone mid-request, then mid-payload
        attach(s)
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 1, 0, 512)[:13])
    with connect(srv) as s:
        attach(s)
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 1, 0, 65536) + b"x" * 100)
    others_served(uri)


def test_structured_errors_and_block_status(server):
    srv, uri = server
    with connect(srv) as s:
        greet(s)
        assert option(s, p.OPT_STRUCTURED_REPLY, b"")[0] == p.REP_ACK
        assert option(s, p.OPT_STRUCTURED_REPLY, b"")[0] == p.REP_ERR_INVALID
        q = p.BASE_ALLOCATION.encode()
        data = struct.pack(">I", 3) + b"exp" + struct.pack(">II", 1, len(q)) + q
        kind, body = option(s, p.OPT_SET_META_CONTEXT, data)
        assert kind == p.REP_META_CONTEXT and body[4:] == q
        meta_id = struct.unpack(">I", body[:4])[0]
        assert reply(s, p.OPT_SET_META_CONTEXT)[0] == p.REP_ACK
        kind, _ = option(s, p.OPT_GO, struct.pack(">I", 3) + b"exp" + struct.pack(">H", 0))
        while kind == p.REP_INFO:
            kind, _ = reply(s, p.OPT_GO)
        assert kind == p.REP_ACK
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 5, SIZE, 1))
        flags, kind, handle, n = struct.unpack(">HHQI", recvn(s, 20)[4:])
        assert (flags, kind, handle) == (p.REPLY_FLAG_DONE, p.REPLY_TYPE_ERROR, 5)
        assert struct.unpack(">I", recvn(s, n)[:4])[0] == p.EINVAL
        s.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_BLOCK_STATUS, 6, 0, SIZE))
        flags, kind, handle, n = struct.unpack(">HHQI", recvn(s, 20)[4:])
        assert (flags, kind, handle) == (p.REPLY_FLAG_DONE, p.REPLY_TYPE_BLOCK_STATUS, 6)
        body = recvn(s, n)
        assert struct.unpack(">I", body[:4])[0] == meta_id
        runs = [struct.unpack_from(">II", body, i) for i in range(4, n, 8)]
        assert sum(r[0] for r in runs) == SIZE and all(not r[1] & p.STATE_HOLE for r in runs)
    others_served(uri)


def test_max_connections(tmp_path):
    """At max-connections the server stops accepting (QEMU's listener is paused): a
    further client waits in the backlog, unanswered, until one leaves."""
    from vmforge.block.backend import BlockBackend
    from vmforge.block.nbd.client import NbdClient
    from vmforge.block.nbd.server import NbdServer
    from vmforge.block.nbd.uri import NbdAddress

    path = str(tmp_path / "d.raw")
    with open(path, "wb") as f:
        f.truncate(SIZE)
    with BlockBackend.open(path, "raw") as bb:
        srv = NbdServer(NbdAddress("", host="127.0.0.1", port=0), max_connections=1)
        srv.start()
        try:
            srv.add_export("exp", bb)
            first = NbdClient(NbdAddress("exp", host="127.0.0.1", port=srv.address.port))
            waiting = connect(srv)
            waiting.settimeout(0.5)
            with pytest.raises(TimeoutError):
                waiting.recv(1)                   # no greeting while the first is there
            first.close()
            waiting.settimeout(10)
            greet(waiting)                        # served once the first has gone
            waiting.close()
        finally:
            srv.stop()


def fake_server(script) -> tuple[socket.socket, threading.Thread]:
    """A listening socket whose one client is answered by ``script(conn)``."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            try:
                script(conn)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock, t


def handshake_then(reply: bytes):
    """A server that negotiates properly (ACKs every option, GO with the export's info)
    and then answers the first request with ``reply`` and hangs up."""
    def script(conn: socket.socket) -> None:
        conn.sendall(struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE))
        recvn(conn, 4)
        while True:
            _, opt, n = p.OPTION.unpack(recvn(conn, 16))
            recvn(conn, n)
            if opt == p.OPT_GO:
                info = p.EXPORT_INFO.pack(p.INFO_EXPORT, SIZE, p.TF_HAS_FLAGS)
                conn.sendall(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, opt, p.REP_INFO,
                                                 len(info)) + info)
                conn.sendall(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, opt, p.REP_ACK, 0))
                break
            conn.sendall(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, opt, p.REP_ERR_UNSUP, 0))
        recvn(conn, 28)
        conn.sendall(reply)
    return script


@pytest.mark.parametrize("case", ["greeting", "oldstyle", "reply-magic", "handle",
                                  "short-data", "chunk-outside", "gone"])
def test_client_refuses_broken_servers(case):
    """vmforge's client against servers that break the protocol: one clear BlockError,
    never a hang or another exception."""
    from vmforge.block.backend import BlockBackend
    from vmforge.block.driver import BlockError

    scripts = {
        "greeting": lambda c: c.sendall(b"HELLO, WORLD!!!!!!"),
        "oldstyle": lambda c: c.sendall(struct.pack(">QQ", p.NBDMAGIC, 0x00420281861253)),
        "reply-magic": handshake_then(b"\x00" * 16),
        "handle": handshake_then(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, 999)),
        "short-data": handshake_then(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, 1) + b"x"),
        "chunk-outside": handshake_then(p.STRUCTURED_REPLY.pack(
            p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_OFFSET_DATA, 1, 8 + 4)
            + struct.pack(">Q", SIZE) + b"abcd"),
        "gone": handshake_then(b""),
    }
    lsock, t = fake_server(scripts[case])
    with lsock:
        uri = f"nbd://127.0.0.1:{lsock.getsockname()[1]}/exp"
        with pytest.raises(BlockError) as exc:
            with BlockBackend.open(uri) as bb:
                bb.read(0, 4096)
    assert str(exc.value).startswith(uri)
    t.join(10)
