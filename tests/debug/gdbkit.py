"""A small GDB remote-protocol client and a riscv-virt machine with a stub
(``conftest.py`` puts this directory on ``sys.path``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.debug import GdbStub, start_gdbstub
from vmforge.debug.protocol import checksum
from vmforge.testing.oracles import require_program
from vmforge.testing.riscv_asm import assemble

VMFORGE = [sys.executable, "-m", "vmforge.cli.main"]
RAM = 0x8000_0000

# fixed-size instructions, so the tests know every address:
#   0x00 li t0, 0 / 0x04 loop: addi t0, t0, 1 / 0x08 auipc t1, 0 / 0x0c sd t0, 0x100(t1)
#   0x10 j loop / 0x14 finish: the SiFive test finisher says "pass" / 0x24 j .
LOOP_PROGRAM = """
    .option norvc
    li t0, 0
loop:
    addi t0, t0, 1
    auipc t1, 0
    sd t0, 0x100(t1)
    j loop
finish:
    lui t2, 0x100
    lui t3, 0x5
    addi t3, t3, 0x555
    sw t3, 0(t2)
1:  j 1b
"""
COUNTER = RAM + 0x108
FINISH = RAM + 0x14

#: how every gdb script of these tests starts ({elf}: the symbol file, {port})
PREAMBLE = """
set pagination off
set confirm off
set tcp connect-timeout 30
file {elf}
target remote 127.0.0.1:{port}
"""


class GdbClient:
    """Speaks the remote protocol as gdb does (acks on), for tests."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(address[5:])
        else:
            host, port = address[4:].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.acks: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: str | bytes) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        self.sock.sendall(b"$" + body + b"#%02x" % checksum(body))

    def recv(self) -> str:
        """The next packet (acked), with the acks seen before it in :attr:`acks`."""
        while True:
            while self.buf[:1] in (b"+", b"-"):
                self.acks.append(self.buf[:1])
                self.buf = self.buf[1:]
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start)
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body = self.buf[start + 1:end]
                assert int(self.buf[end + 1:end + 3], 16) == checksum(body)
                self.buf = self.buf[end + 3:]
                self.sock.sendall(b"+")
                return body.decode("latin-1")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the stub closed the connection")
            self.buf += chunk

    def ask(self, payload: str | bytes) -> str:
        self.send(payload)
        return self.recv()

    def reg(self, n: int) -> int:
        return int.from_bytes(bytes.fromhex(self.ask(f"p{n:x}")), "little")

    def set_reg(self, n: int, value: int) -> str:
        return self.ask(f"P{n:x}={value.to_bytes(8, 'little').hex()}")


class Vm:
    def __init__(self, machine: Any, stub: GdbStub, console: BufferChar) -> None:
        self.machine, self.stub, self.console = machine, stub, console
        self.clients: list[GdbClient] = []

    def connect(self) -> GdbClient:
        client = GdbClient(self.stub.address)
        self.clients.append(client)
        return client


def make_vm(tmp_path: Path, smp: int = 1, dev: str = "tcp::0") -> Vm:
    from vmforge_riscv_virt.machine import RiscvVirt

    image = tmp_path / "loop.bin"
    image.write_bytes(assemble(LOOP_PROGRAM, tmp_path))
    console = BufferChar()
    machine = RiscvVirt(MachineConfig(machine="riscv-virt", memory=64 << 20, bios="none",
                                      kernel=str(image), smp=smp, serial=[console]))
    machine.realize()
    stub = start_gdbstub(machine, dev, wait=True)
    assert stub is not None
    machine.start()
    return Vm(machine, stub, console)


def stop_vm(v: Vm) -> None:
    for c in v.clients:
        c.close()
    v.machine.request_shutdown("user", 0)
    v.machine.resume()
    v.machine.wait(30)
    v.stub.close()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gdb_session(tmp_path: Path, script: str, server: list[str],
                tag: str) -> tuple[str, subprocess.CompletedProcess]:
    """Start ``server`` (an emulator waiting for gdb), run gdb-multiarch on
    ``script`` against it; gdb's output and how the server ended."""
    gdb = require_program("gdb-multiarch", "gdb-multiarch")
    path = tmp_path / f"{tag}.gdb"
    path.write_text(script)
    proc = subprocess.Popen(server, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out = subprocess.run([gdb, "-batch", "-nx", "-x", str(path)], capture_output=True,
                             text=True, timeout=180, stdin=subprocess.DEVNULL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(server, proc.returncode, stdout, stderr)
    return out.stdout + out.stderr, done
