"""QMP's NBD server commands, the same script against vmforge and QEMU 7.2
(``qemu-system-riscv64 -M virt`` with a raw virtio-blk disk ``hd0``), through
``qemu.qmp``: the refusals before, during and after, an export written and read
by qemu-io while the guest runs, its removal (BLOCK_EXPORT_DELETED) and the stop;
the errors must be QEMU's (class and text) and the disk must hold what was written."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.qmp import qmpkit
from tests.qmp.qmpkit import (
    Guest,
    connect,
    error_of,
    next_events,
    shape,
    start_vmforge,
    stop_guest,
)
from vmforge.block.nbd import NbdError, parse_nbd_name
from vmforge.block.nbd.client import NbdClient
from vmforge.testing.migration_kit import free_port
from vmforge.testing.oracles import require_program


def start_qemu(where: Path) -> Guest:
    """qmpkit's QEMU guest, its disk shared for writing (``share-rw=on``: QEMU's
    permissions refuse a writable export of a disk a device writes otherwise)."""
    return qmpkit.start_qemu(where, disk_device="virtio-blk-device,drive=hd0,share-rw=on")


def qemu_io(uri: str, *cmds: str, readonly: bool = False) -> str:
    exe = require_program("qemu-io", "qemu-utils")
    args = [exe, "-f", "raw", *(["-r"] if readonly else [])]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run([*args, uri], capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


async def script(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    out: dict[str, Any] = {}
    err: dict[str, Any] = {}
    out["errors"] = err
    err["add-not-running"] = await error_of(c, "nbd-server-add", {"device": "hd0"})
    err["stop-not-running"] = await error_of(c, "nbd-server-stop")
    err["remove-not-running"] = await error_of(c, "nbd-server-remove", {"name": "hd0"})
    err["start-no-addr"] = await error_of(c, "nbd-server-start", {})
    err["start-bad-type"] = await error_of(c, "nbd-server-start",
                                           {"addr": {"type": "bogus", "data": {}}})
    with socket.socket() as busy:           # a port someone else listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        err["start-port-in-use"] = await error_of(c, "nbd-server-start", {"addr": {
            "type": "inet", "data": {"host": "127.0.0.1",
                                     "port": str(busy.getsockname()[1])}}})
    port = free_port()
    inet = {"type": "inet", "data": {"host": "127.0.0.1", "port": str(port)}}
    out["start"] = await c.execute("nbd-server-start", {"addr": inet})
    err["start-again"] = await error_of(c, "nbd-server-start", {"addr": inet})
    err["add-nodev"] = await error_of(c, "nbd-server-add", {"device": "nosuch"})
    out["add"] = await c.execute("nbd-server-add", {"device": "hd0", "writable": True})
    err["add-again"] = await error_of(c, "nbd-server-add", {"device": "hd0"})
    out["add-named"] = await c.execute("nbd-server-add", {"device": "hd0", "name": "ro"})
    uri = f"nbd://127.0.0.1:{port}/hd0"
    out["io"] = qemu_io(uri, "write -P 0x42 64k 128k", "read -P 0x42 64k 128k")
    out["io-ro"] = qemu_io(f"nbd://127.0.0.1:{port}/ro", "read -P 0x42 64k 128k",
                           readonly=True)
    out["io-ro-rw"] = qemu_io(f"nbd://127.0.0.1:{port}/ro", "write -P 0x43 0 4k")
    out["exports"] = await c.execute("query-block-exports")
    err["remove-nosuch"] = await error_of(c, "nbd-server-remove", {"name": "nosuch"})
    err["remove-badmode"] = await error_of(c, "nbd-server-remove",
                                           {"name": "ro", "mode": "bogus"})
    node = (await c.execute("query-block"))[0]["inserted"]["node-name"]
    out["export-add"] = await c.execute("block-export-add", {
        "type": "nbd", "id": "e1", "node-name": node})
    err["export-add-again"] = await error_of(c, "block-export-add", {
        "type": "nbd", "id": "e1", "node-name": node})
    err["export-add-nonode"] = await error_of(c, "block-export-add", {
        "type": "nbd", "id": "e2", "node-name": "nosuch"})
    err["export-del-nosuch"] = await error_of(c, "block-export-del", {"id": "nosuch"})
    out["export-del"] = await c.execute("block-export-del", {"id": "e1"})
    # a connected client keeps an export unless removed hard (then it is dropped)
    client = NbdClient(parse_nbd_name(f"nbd://127.0.0.1:{port}/ro"))
    buf = memoryview(bytearray(4096))
    client.read(64 << 10, buf)
    out["client-read"] = bytes(buf[:4])
    err["remove-in-use"] = await error_of(c, "nbd-server-remove", {"name": "ro"})
    out["remove-hard"] = await c.execute("nbd-server-remove", {"name": "ro", "mode": "hard"})
    out["events"] = [(e["event"], e.get("data")) for e in await next_events(c, 2)]
    with pytest.raises(NbdError):
        client.read(0, buf)
    client.sock.close()
    out["add-named"] = await c.execute("nbd-server-add", {"device": "hd0", "name": "ro"})
    out["remove"] = await c.execute("nbd-server-remove", {"name": "ro"})
    out["events"] += [(e["event"], e.get("data")) for e in await next_events(c, 1)]
    out["stop"] = await c.execute("nbd-server-stop")
    out["events"] += [(e["event"], e.get("data")) for e in await next_events(c, 1)]
    err["stop-again"] = await error_of(c, "nbd-server-stop")
    unix = {"type": "unix", "data": {"path": str(where / "nbd.sock")}}
    out["start-unix"] = await c.execute("nbd-server-start", {"addr": unix})
    out["add-unix"] = await c.execute("nbd-server-add", {"device": "hd0"})
    out["io-unix"] = qemu_io(f"nbd+unix:///hd0?socket={where / 'nbd.sock'}",
                             "read -P 0x42 64k 128k", "read -P 0 0 64k", readonly=True)
    out["stop-unix"] = await c.execute("nbd-server-stop")
    await c.execute("quit")
    with contextlib.suppress(EOFError):      # the server may hang up first, as QEMU does
        await c.disconnect()
    return out


def on_both(tmp_path_factory, run: Any) -> dict[str, dict[str, Any]]:
    """``run(qmp_socket, directory)`` against QEMU's guest and vmforge's; each result
    with the guest's disk afterwards under ``disk``."""
    out = {}
    for name, start in (("qemu", start_qemu), ("vmforge", start_vmforge)):
        where = tmp_path_factory.mktemp(name)
        guest = start(where)
        try:
            out[name] = asyncio.run(run(guest.sock, where))
        finally:
            stop_guest(guest)
        out[name]["disk"] = (where / "disk.raw").read_bytes()
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> dict[str, dict[str, Any]]:
    return on_both(tmp_path_factory, script)


def test_errors_as_qemu(both):
    assert both["vmforge"]["errors"] == both["qemu"]["errors"]


def test_replies_and_events_as_qemu(both):
    assert both["vmforge"]["client-read"] == b"\x42" * 4
    for key in ("start", "add", "add-named", "export-add", "export-del", "remove-hard",
                "remove", "stop",
                "events", "start-unix", "add-unix", "stop-unix"):
        assert both["vmforge"][key] == both["qemu"][key], key
    assert shape(both["vmforge"]["exports"]) == shape(both["qemu"]["exports"])


def test_export_read_and_written(both):
    for name in ("qemu", "vmforge"):
        out = both[name]
        assert "verification failed" not in out["io"] and "wrote 131072" in out["io"], name
        assert "read 131072" in out["io-ro"] and "verification failed" not in out["io-ro"]
        assert "Could not open image: Permission denied" in out["io-ro-rw"], out["io-ro-rw"]
        assert "verification failed" not in out["io-unix"] and "read 65536" in out["io-unix"]
        disk = out["disk"]
        assert disk[64 << 10:192 << 10] == b"\x42" * (128 << 10)
        assert disk[:64 << 10] == bytes(64 << 10)


async def hmp_script(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    port = free_port()
    out: dict[str, Any] = {}
    lines = [f"nbd_server_start 127.0.0.1:{port}", f"nbd_server_start 127.0.0.1:{port}",
             "nbd_server_add -w hd0", "nbd_server_add nosuch", "nbd_server_add hd0 other",
             "nbd_server_add hd0", "nbd_server_remove nosuch", "nbd_server_remove other",
             "nbd_server_stop", "nbd_server_stop",
             f"nbd_server_start -a -w unix:{where / 'hmp.sock'}"]
    out["lines"] = [(line.replace(str(port), "PORT").replace(str(where), "DIR"),
                     await c.execute("human-monitor-command", {"command-line": line}))
                    for line in lines]
    out["io"] = qemu_io(f"nbd+unix:///hd0?socket={where / 'hmp.sock'}",
                        "write -P 0x66 256k 4k", "read -P 0x66 256k 4k")
    out["stop"] = await c.execute("human-monitor-command", {"command-line": "nbd_server_stop"})
    await c.execute("quit")
    with contextlib.suppress(EOFError):
        await c.disconnect()
    return out


def test_human_monitor_as_qemu(tmp_path_factory) -> None:
    out = on_both(tmp_path_factory, hmp_script)
    io = {name: out[name].pop("io") for name in out}
    assert out["vmforge"] == out["qemu"]
    assert sum(reply.startswith("Error: ") for _, reply in out["qemu"]["lines"]) == 5
    for text in io.values():
        assert "wrote 4096" in text and "verification failed" not in text, text
