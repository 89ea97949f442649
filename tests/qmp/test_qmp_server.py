"""vmforge's QMP server with QEMU's client library (qemu.qmp) against a running
riscv-virt guest: negotiation, several clients, events, commands on the
machine's thread, clients that misbehave, and ``vmforge run -qmp``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient
from qmpkit import (
    Guest,
    Raw,
    connect,
    error_of,
    free_tcp_port,
    next_events,
    start_vmforge,
    stop_guest,
    wait_for_path,
)

from vmforge.qmp import QmpServer, QmpSpecError, commands, mon_qmp_spec, parse_qmp_spec

VMFORGE = [sys.executable, "-m", "vmforge.cli.main"]


@pytest.fixture
def guest(sockdir: Path) -> Iterator[Guest]:
    g = start_vmforge(sockdir)
    yield g
    stop_guest(g)


def test_commands_wait_for_negotiation(guest: Guest) -> None:
    raw = Raw(guest.sock, negotiate=False)
    assert raw.greeting["QMP"]["capabilities"] == []
    assert raw.ask(b'{"execute": "query-status", "id": 1}') == {"id": 1, "error": {
        "class": "CommandNotFound",
        "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
    guest.machine.pause()             # no event before negotiation
    assert raw.ask(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}') == {
        "error": {"class": "GenericError", "desc": "Capability 'oob' not available"}}
    assert raw.ask(b'{"execute": "qmp_capabilities"}') == {"return": {}}
    assert raw.ask(b'{"execute": "query-status"}')["return"]["status"] == "paused"
    raw.close()


def test_several_clients_share_the_events(guest: Guest) -> None:
    async def run() -> None:
        clients = [await connect(guest.sock, f"c{i}") for i in range(3)]
        await clients[0].execute("stop")
        for c in clients:
            assert [e["event"] for e in await next_events(c, 1)] == ["STOP"]
            assert (await c.execute("query-status"))["status"] == "paused"
        await clients[2].execute("cont")
        await clients[1].execute("cont")              # already running: no event
        await clients[1].execute("system_reset")
        for c in clients:
            events = await next_events(c, 2)
            assert [e["event"] for e in events] == ["RESUME", "RESET"]
            assert events[1]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
            assert c.events.empty()
        await asyncio.gather(*(c.execute("query-block") for c in clients))
        for c in clients:
            await c.disconnect()

    asyncio.run(run())
    assert guest.machine.wait(0) is None              # still running


def test_event_timestamps_are_the_hosts_wall_clock(guest: Guest) -> None:
    async def run() -> dict[str, Any]:
        c = await connect(guest.sock)
        await c.execute("system_powerdown")
        (event,) = await next_events(c, 1)
        await c.disconnect()
        return event

    before = time.time()
    event = asyncio.run(run())
    stamp = event["timestamp"]
    assert set(stamp) == {"seconds", "microseconds"} and 0 <= stamp["microseconds"] < 10**6
    assert before - 1 <= stamp["seconds"] + stamp["microseconds"] / 1e6 <= time.time() + 1
    assert event["event"] == "POWERDOWN" and "data" not in event
    assert guest.machine.wait(0.2) is None            # riscv virt has no power button


def test_human_monitor_command(guest: Guest) -> None:
    async def run() -> tuple[str, str, str, list[dict[str, Any]]]:
        c = await connect(guest.sock)
        cpus = await c.execute("human-monitor-command", {"command-line": "info cpus"})
        bad = await c.execute("human-monitor-command", {"command-line": "bogus"})
        empty = await c.execute("human-monitor-command", {"command-line": "stop"})
        events = await next_events(c, 1)
        await c.disconnect()
        return cpus, bad, empty, events

    cpus, bad, empty, events = asyncio.run(run())
    assert cpus.startswith("* CPU #0: pc=") and cpus.endswith("\r\n")
    assert "unknown command: 'bogus'" in bad
    assert empty == "" and [e["event"] for e in events] == ["STOP"]


def test_query_block_names_the_drive(guest: Guest) -> None:
    async def run() -> tuple[Any, Any]:
        c = await connect(guest.sock)
        block = await c.execute("query-block")
        stats = await c.execute("query-blockstats")
        await c.disconnect()
        return block, stats

    block, stats = asyncio.run(run())
    assert [b["device"] for b in block] == ["hd0"] == [s["device"] for s in stats]
    inserted = block[0]["inserted"]
    assert inserted["drv"] == "raw" and inserted["image"]["virtual-size"] == 1 << 20
    assert inserted["ro"] is False and inserted["file"].endswith("disk.raw")
    assert stats[0]["stats"]["rd_operations"] == 0


def test_replies_keep_the_order_of_the_requests(guest: Guest) -> None:
    raw = Raw(guest.sock)
    n = 200                           # far more than the 8 handed to the machine at once
    raw.send(b"".join(b'{"execute": "query-status", "id": %d}' % i for i in range(n)))
    assert [raw.read()["id"] for _ in range(n)] == list(range(n))
    raw.close()


def test_clients_that_go_away_do_not_hurt_the_guest(guest: Guest) -> None:
    for data in (b'{"execute": "query-block"}' * 100,
                 b'{"execute": "human-monitor-command", "arguments": {"command-line": "info',
                 b'{"execute": "qmp_capabilities"}{"execute": "stop"}{"execute": "cont"}',
                 b"\xff" * 1000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(guest.sock))
        s.sendall(data)
        s.close()
    # one that sends and never reads, still connected
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(guest.sock))
    stuck.sendall(b'{"execute": "qmp_capabilities"}' + b'{"execute": "query-cpus-fast"}' * 2000)
    raw = Raw(guest.sock)
    t0 = time.monotonic()
    assert raw.ask(b'{"execute": "query-status"}')["return"]["status"] == "running"
    assert time.monotonic() - t0 < 5
    raw.close()
    stuck.close()
    assert guest.machine.wait(0) is None


def test_a_failing_command_is_an_error_not_a_stopped_machine(
        guest: Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(session: Any, args: dict[str, Any]) -> Any:
        raise RuntimeError("the handler broke")

    monkeypatch.setitem(commands.COMMANDS, "x-boom", commands.Command("x-boom", boom))

    async def run() -> dict[str, str]:
        c = await connect(guest.sock)
        err = await error_of(c, "x-boom")
        assert (await c.execute("query-status"))["running"] is True
        await c.disconnect()
        return err

    assert asyncio.run(run()) == {"class": "GenericError", "desc": "the handler broke"}
    assert guest.machine.wait(0) is None


def test_quit_stops_the_machine_after_the_shutdown_event(guest: Guest) -> None:
    async def run() -> list[dict[str, Any]]:
        c = await connect(guest.sock)
        await c.execute("quit")
        events = await next_events(c, 1)
        with contextlib.suppress(EOFError):  # vmforge may hang up first, as QEMU does
            await c.disconnect()
        return events

    events = asyncio.run(run())
    assert events[0]["event"] == "SHUTDOWN"
    assert events[0]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert guest.machine.wait(10) == 0


@pytest.mark.parametrize("spec, message", [
    ("unix:,server=on", "needs a path"),
    ("unix:/x,server=off", "add server=on"),
    ("unix:/x,server=on,nowait=1", "unknown option"),
    ("tcp:127.0.0.1,server=on", "HOST:PORT"),
    ("tcp:127.0.0.1:99999,server=on", "HOST:PORT"),
    ("stdio", "expected unix:PATH"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(QmpSpecError, match=message):
        parse_qmp_spec(spec)


def test_specs() -> None:
    assert parse_qmp_spec("unix:/a/b,server=on,wait=off").path == "/a/b"
    tcp = parse_qmp_spec("tcp:127.0.0.1:4444,server=on,wait=off")
    assert (tcp.host, tcp.port, tcp.wait) == ("127.0.0.1", 4444, False)
    assert parse_qmp_spec("tcp::4444,server=on").wait is True     # QEMU's default


def test_listening_twice_on_a_port_is_a_clear_error(guest: Guest) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = QmpServer(guest.machine, f"tcp:127.0.0.1:{port},server=on,wait=off")
        with pytest.raises(QmpSpecError, match="cannot listen"):
            server.start()
        server.close()


# -- vmforge run -qmp ---------------------------------------------------------------------

def _vmforge_run(kernel: Path, *qmp: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                             "-kernel", str(kernel), "-nographic",
                             *(a for spec in qmp for a in ("-qmp", spec))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_vmforge_run_qmp_unix_and_tcp(sockdir: Path) -> None:
    kernel = sockdir / "spin.bin"
    kernel.write_bytes(bytes.fromhex("6f000000"))
    sock = sockdir / "run.qmp"
    port = free_tcp_port()
    # the servers start in order: once the socket is there, the port listens too
    proc = _vmforge_run(kernel, f"tcp:127.0.0.1:{port},server=on,wait=off",
                        f"unix:{sock},server=on,wait=off")
    try:
        wait_for_path(sock, proc)

        async def run() -> None:
            tcp = QMPClient("tcp")
            await tcp.connect(("127.0.0.1", port))
            unix = await connect(sock)
            assert (await tcp.execute("query-status"))["status"] == "running"
            await unix.execute("stop")
            assert [e["event"] for e in await next_events(tcp, 1)] == ["STOP"]
            assert [e["event"] for e in await next_events(unix, 1)] == ["STOP"]
            await unix.execute("quit")
            for c in (tcp, unix):
                events = await next_events(c, 1)
                assert events[0]["event"] == "SHUTDOWN"
                with contextlib.suppress(EOFError):   # vmforge exited: it hung up
                    await c.disconnect()

        asyncio.run(run())
    finally:
        status, err = _finish(proc)
    assert status == 0, err
    assert "Traceback" not in err
    assert not sock.exists()          # removed when vmforge exits, as QEMU does


def test_vmforge_run_qmp_wait_on_waits_for_a_client(sockdir: Path) -> None:
    kernel = sockdir / "poweroff.bin"
    kernel.write_bytes(bytes.fromhex("b7021000" "37530000" "13035355" "23a06200" "6f000000"))
    sock = sockdir / "wait.qmp"
    proc = _vmforge_run(kernel, f"unix:{sock},server=on")
    try:
        wait_for_path(sock, proc)
        time.sleep(0.5)
        assert proc.poll() is None     # the guest would power off at once: it has not run
        raw = Raw(sock, negotiate=False)    # a client: the guest runs, powers off
        assert "QMP" in raw.greeting
        assert proc.wait(20) == 0
        raw.close()
    finally:
        code, err = _finish(proc)
    assert code == 0 and "Traceback" not in err
    assert f"waiting for a QMP connection on {sock}" in err


@pytest.mark.parametrize("spec", ["unix:/x,server=off", "tcp:localhost,server=on",
                                  "unix:/nonexistent-dir/q.sock,server=on,wait=off"])
def test_vmforge_run_bad_qmp(sockdir: Path, spec: str) -> None:
    kernel = sockdir / "spin.bin"
    kernel.write_bytes(bytes.fromhex("6f000000"))
    code, err = _finish(_vmforge_run(kernel, spec))
    assert code == 1
    assert err.startswith("vmforge run: -qmp") and "Traceback" not in err


def test_vmforge_run_mon_control_on_a_socket_chardev(sockdir: Path) -> None:
    kernel = sockdir / "spin.bin"
    kernel.write_bytes(bytes.fromhex("6f000000"))
    sock = sockdir / "mon.qmp"
    proc = subprocess.Popen([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                             "-kernel", str(kernel), "-nographic",
                             "-chardev", f"socket,id=mon0,path={sock},server=on,wait=off",
                             "-mon", "chardev=mon0,mode=control"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_path(sock, proc)
        raw = Raw(sock)
        assert raw.ask(b'{"execute": "query-status"}')["return"]["running"] is True
        raw.send(b'{"execute": "quit"}\n')
        assert raw.read()["event"] == "SHUTDOWN"
        raw.close()
    finally:
        code, err = _finish(proc)
    assert code == 0 and "Traceback" not in err


@pytest.mark.parametrize("chardev, mon, message", [
    ("socket,id=m,path=/x,server=on", "chardev=m", "only mode=control"),
    ("socket,id=m,path=/x,server=on", "chardev=other,mode=control", "no -chardev with id=other"),
    ("file,id=m,path=/x", "chardev=m,mode=control", "needs a socket chardev"),
    ("socket,id=m,path=/x", "chardev=m,mode=control", "add server=on"),
])
def test_bad_mon(chardev: str, mon: str, message: str) -> None:
    from vmforge.devspec import ChardevSpec

    spec = ChardevSpec.parse(chardev)
    with pytest.raises(QmpSpecError, match=message):
        mon_qmp_spec(mon, {spec.id: spec})


def test_clients_that_come_and_go_leave_no_descriptors(guest: Guest) -> None:
    server = guest.server
    assert server is not None

    def settled() -> int:
        """The process's descriptors once the server has let every client go."""
        deadline = time.monotonic() + 5
        while server.client_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.client_count == 0
        return len(os.listdir("/proc/self/fd"))

    Raw(guest.sock).close()          # the first client settles the server's own state
    before = settled()
    for i in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(guest.sock))
        if i % 2:
            s.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-block"}')
        s.close()
    raw = Raw(guest.sock)
    assert raw.ask(b'{"execute": "query-status"}')["return"]["running"] is True
    raw.close()
    assert settled() <= before


def test_after_the_guest_powered_off_queries_are_still_answered(sockdir: Path) -> None:
    from qmpkit import POWEROFF

    guest = start_vmforge(sockdir, kernel=POWEROFF, paused=True)
    try:
        raw = Raw(guest.sock)
        raw.send(b'{"execute": "cont"}\n')
        while raw.read().get("event") != "SHUTDOWN":
            pass
        assert guest.machine.wait(10) == 0
        assert raw.ask(b'{"execute": "query-status"}')["return"] == {
            "status": "shutdown", "singlestep": False, "running": False}
        assert raw.ask(b'{"execute": "system_reset"}') == {"error": {
            "class": "GenericError",
            "desc": "The machine has shut down: system_reset is not available"}}
        raw.close()
    finally:
        stop_guest(guest)
