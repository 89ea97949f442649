"""The monitor's ``gdbserver`` (QEMU's HMP command): a stub started, replaced and
stopped on a running machine, in QEMU's words."""

from __future__ import annotations

from pathlib import Path

import pytest
from gdbkit import LOOP_PROGRAM, RAM, GdbClient

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.monitor import Monitor
from vmforge.testing.riscv_asm import assemble


def test_gdbserver_starts_replaces_and_stops_a_stub(tmp_path: Path) -> None:
    from vmforge_riscv_virt.machine import RiscvVirt

    image = tmp_path / "loop.bin"
    image.write_bytes(assemble(LOOP_PROGRAM, tmp_path))
    console = BufferChar()
    machine = RiscvVirt(MachineConfig(machine="riscv-virt", memory=64 << 20, bios="none",
                                      kernel=str(image), serial=[console]))
    machine.realize()
    monitor = Monitor(machine, console)
    machine.start()
    try:
        sock = tmp_path / "gdb.sock"
        assert monitor.execute(f"gdbserver unix:{sock}") == \
            f"Waiting for gdb connection on device 'unix:{sock}'"
        client = GdbClient(f"unix:{sock}")
        assert client.ask("?").startswith("T")            # gdb attached: the guest stops
        assert client.ask(f"Z0,{RAM + 4:x},4") == "OK"
        assert RAM + 4 in machine.cpus[0].breakpoints
        assert monitor.execute("gdbserver none") == "Disabled gdbserver"
        with pytest.raises((ConnectionError, OSError)):
            client.ask("?")
        client.close()
        assert machine.gdbstub is None and not sock.exists()
        assert machine.cpus[0].breakpoints == ()               # gdb's breakpoints went too
        assert monitor.execute("gdbserver tcp:0.0.0.0:1234") == \
            "Could not open gdbserver on device 'tcp:0.0.0.0:1234'"
        assert monitor.execute("gdbserver tcp::0").startswith("Waiting for gdb connection")
        first = machine.gdbstub
        assert monitor.execute("gdbserver tcp::0").startswith("Waiting")   # replaces it
        assert machine.gdbstub is not first and first._listener is None
        assert "gdbserver" in monitor.execute("help")
    finally:
        machine.request_shutdown("user", 0)
        machine.resume()
        assert machine.wait(30) == 0
