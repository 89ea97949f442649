"""Helpers of the QMP tests: guests (vmforge's and QEMU's) with a QMP socket, the
script both are asked the same questions with, and the shape of a reply."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient

from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing.oracles import require_program

#: ``j .``: a guest that spins at the start of RAM
SPIN = bytes.fromhex("6f000000")
#: write 0x5555 (PASS) to the SiFive test finisher at 0x100000, then spin
POWEROFF = bytes.fromhex("b7021000" "37530000" "13035355" "23a06200" "6f000000")
#: write 0x7777 (RESET) to the finisher: the machine resets (and runs this again)
REBOOT = bytes.fromhex("b7021000" "37730000" "13037377" "23a06200" "6f000000")
DISK_SIZE = 1 << 20

#: what every guest is asked, in this order (name, arguments)
SCRIPT: list[tuple[str, dict[str, Any] | None]] = [
    ("query-version", None),
    ("query-commands", None),
    ("query-status", None),
    ("query-name", None),
    ("query-cpus-fast", None),
    ("query-block", None),
    ("query-blockstats", None),
    ("human-monitor-command", {"command-line": "info cpus"}),
    ("stop", None),
    ("cont", None),
    ("system_reset", None),
    ("system_powerdown", None),
]


@dataclass
class Guest:
    sock: Path
    machine: Any = None
    server: QmpServer | None = None
    proc: subprocess.Popen[bytes] | None = None


def write_images(where: Path, kernel: bytes = SPIN) -> tuple[Path, Path]:
    image = where / "kernel.bin"
    image.write_bytes(kernel)
    disk = where / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    return image, disk


def start_vmforge(where: Path, kernel: bytes = SPIN, paused: bool = False,
                  smp: int = 1) -> Guest:
    from vmforge_riscv_virt.machine import RiscvVirt

    image, disk = write_images(where, kernel)
    config = MachineConfig(
        machine="riscv-virt", bios="none", kernel=str(image), serial=["null"], smp=smp,
        drives=[DriveSpec.parse(f"file={disk},format=raw,if=none,id=hd0")],
        devices=[DeviceSpec.parse("virtio-blk-device,drive=hd0")])
    machine = RiscvVirt(config)
    sock = where / "vmforge.qmp"
    server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
    if paused:
        machine.pause()
    machine.start()
    return Guest(sock, machine=machine, server=server)


def start_qemu(where: Path, kernel: bytes = SPIN, paused: bool = False,
               smp: int = 1, disk_device: str = "virtio-blk-device,drive=hd0") -> Guest:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    image, disk = write_images(where, kernel)
    sock = where / "qemu.qmp"
    proc = subprocess.Popen(
        [qemu, "-M", "virt", "-bios", "none", "-kernel", str(image), "-smp", str(smp),
         "-display", "none", "-serial", "none", "-monitor", "none",
         "-drive", f"file={disk},format=raw,if=none,id=hd0",
         "-device", disk_device,
         "-qmp", f"unix:{sock},server=on,wait=off", *(["-S"] if paused else [])],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"QEMU did not start: {proc.communicate()[1]!r}")
        time.sleep(0.05)
    return Guest(sock, proc=proc)


def stop_guest(guest: Guest) -> None:
    if guest.machine is not None:
        guest.machine.stop(10)
    if guest.server is not None:
        guest.server.close()
    if guest.proc is not None:
        if guest.proc.poll() is None:
            guest.proc.kill()
        guest.proc.communicate(timeout=10)


async def connect(sock: Path, name: str = "test") -> QMPClient:
    client = QMPClient(name)
    await client.connect(str(sock))
    return client


async def error_of(client: QMPClient, cmd: str, args: dict[str, Any] | None = None,
                   ) -> dict[str, str]:
    """The error a command is answered with (the test fails when it succeeds)."""
    try:
        await client.execute(cmd, args)
    except ExecuteError as exc:
        return {"class": exc.error_class, "desc": exc.error.error.desc}
    raise AssertionError(f"{cmd} succeeded")


async def next_events(client: QMPClient, count: int, timeout: float = 10.0,
                      ) -> list[dict[str, Any]]:
    import asyncio

    out = []
    for _ in range(count):
        msg = await asyncio.wait_for(client.events.get(), timeout)
        out.append(json.loads(bytes(msg)))
    return out


async def exercise(sock: Path) -> dict[str, Any]:
    """Ask a guest every question of :data:`SCRIPT`, some wrong ones, then quit."""
    client = await connect(sock)
    result: dict[str, Any] = {"greeting": client.greeting._asdict()}
    for name, args in SCRIPT:
        result[name] = await client.execute(name, args)
    result["events"] = await next_events(client, 4)       # STOP RESUME RESET POWERDOWN
    result["errors"] = {
        "unknown": await error_of(client, "no-such-command"),
        "unexpected": await error_of(client, "query-status", {"x": 1}),
        "missing": await error_of(client, "human-monitor-command", {}),
        "wrong-type": await error_of(client, "human-monitor-command", {"command-line": 1}),
        "again": await error_of(client, "qmp_capabilities"),
    }
    await client.execute("quit")
    result["events"] += await next_events(client, 1)      # SHUTDOWN
    with contextlib.suppress(EOFError):      # the server may hang up first, as QEMU does
        await client.disconnect()
    return result


def shape(value: Any) -> Any:
    """The keys and JSON types of a value (lists: the shapes of their items, merged)."""
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        items = [shape(v) for v in value]
        return [items[0]] if items and all(i == items[0] for i in items) else items
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


class Raw:
    """A QMP client on a bare socket: exact bytes in, parsed lines out."""

    def __init__(self, sock: Path, negotiate: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(sock))
        self.file = self.sock.makefile("rb")
        self.greeting = self.read()
        if negotiate:
            self.send(b'{"execute": "qmp_capabilities"}')
            assert self.read() == {"return": {}}

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Any:
        try:
            line = self.file.readline()
        except ConnectionResetError:
            line = b""
        if not line:
            raise EOFError("the server closed the connection")
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    def ask(self, data: bytes) -> Any:
        self.send(data + b"\n")
        return self.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_path(path: Path, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)
