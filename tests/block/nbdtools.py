"""Helpers of the NBD tests: a vmforge NBD server over an image, qemu-nbd."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from vmforge.block.backend import BlockBackend
from vmforge.block.nbd.server import NbdServer
from vmforge.block.nbd.uri import NbdAddress
from vmforge.testing.oracles import require_program


@contextlib.contextmanager
def serving(path: str, fmt: str, *, writable: bool = True, name: str = "exp",
            max_connections: int = 0) -> Iterator[tuple[NbdServer, str]]:
    """A vmforge NBD server on loopback exporting ``path``; (server, its nbd:// URI)."""
    bb = BlockBackend.open(path, fmt, readonly=not writable)
    server = NbdServer(NbdAddress("", host="127.0.0.1", port=0), max_connections)
    server.start()
    try:
        server.add_export(name, bb, writable=writable)
        yield server, f"nbd://127.0.0.1:{server.address.port}/{name}"
    finally:
        server.stop()
        bb.close()


@contextlib.contextmanager
def qemu_nbd(path: str, fmt: str, sock: str, name: str = "exp",
             readonly: bool = False, shared: int = 1) -> Iterator[str]:
    """qemu-nbd serving ``path`` on the UNIX socket ``sock`` (persistent, at most
    ``shared`` clients at once); its URI."""
    exe = require_program("qemu-nbd", "qemu-utils")
    args = [exe, "-t", "-e", str(shared), "-f", fmt, "-x", name, "-k", sock, path]
    if readonly:
        args.insert(1, "-r")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            if os.path.exists(sock) or proc.poll() is not None:
                break
            time.sleep(0.01)
        if not os.path.exists(sock):
            raise RuntimeError(f"qemu-nbd did not start: {proc.stderr.read()!r}")   # type: ignore[union-attr]
        yield f"nbd+unix:///{name}?socket={sock}"
    finally:
        proc.terminate()
        proc.wait(10)
