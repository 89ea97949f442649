"""The Ctrl-A C monitor: switching the console, line editing, commands."""

from __future__ import annotations

import time

from vmforge.chardev import BufferChar
from vmforge.machine import Machine
from vmforge.monitor import Monitor


class FakeCpu:
    def __init__(self) -> None:
        self.pc = 0x8000_0010
        self.priv = 3
        self.x = list(range(32))

    def csr(self, name: str) -> int:
        if name == "mcause":
            return 0xB
        raise KeyError(name)


class Board(Machine):
    name = "board"

    def build(self) -> None:
        self.add_ram(0x8000_0000, 0x1000)
        self.cpus = [FakeCpu()]

    def run_cpus(self) -> bool:
        return True


class Guest:
    """The console's frontend while the guest owns it."""

    def __init__(self) -> None:
        self.got = b""

    def can_receive(self) -> int:
        return 100

    def receive(self, data: bytes) -> None:
        self.got += data


def setup() -> tuple[Board, BufferChar, Monitor, Guest]:
    m = Board()
    m.realize()
    console, guest = BufferChar(), Guest()
    console.attach(guest)
    return m, console, Monitor(m, console), guest


def test_toggle_routes_input_between_guest_and_monitor() -> None:
    _m, console, mon, guest = setup()
    console.feed(b"ls\r")
    assert guest.got == b"ls\r"
    mon.toggle()
    assert console.frontend is mon and b"(vmforge) " in console.output
    console.feed(b"info cpus\r")
    assert guest.got == b"ls\r", "the guest sees nothing while the monitor is active"
    assert b"* CPU #0: pc=0x0000000080000010" in console.output
    mon.toggle()
    console.feed(b"x")
    assert console.frontend is guest and guest.got == b"ls\rx"


def test_commands() -> None:
    m, _console, mon, _ = setup()
    m.space.memory.write_u32(0x8000_0000, 0xDEADBEEF)
    assert "0000000080000000-0000000080000fff (ram) ram" in mon.execute("info mtree")
    assert mon.execute("xp /2x 0x80000000").split(": ")[1] == "0xdeadbeef 0x00000000"
    regs = mon.execute("info registers")
    assert "pc       0000000080000010" in regs and "mcause   000000000000000b" in regs
    assert "x31/t6" in regs and "priv     M" in regs
    assert "unknown command: 'frobnicate'" in mon.execute("frobnicate")
    assert "not RAM" in mon.execute("xp 0x10")
    mon.execute("stop")
    assert m.paused
    mon.execute("cont")
    assert not m.paused
    mon.execute("system_reset")
    mon.execute("quit")
    assert m.shutdown_reason == "user" and m.exit_status == 0


def test_line_editing_backspace() -> None:
    _m, console, mon, _ = setup()
    mon.toggle()
    console.feed(b"info cpuz\x7fs\r")
    assert b"* CPU #0" in console.output


def test_paused_machine_runs_no_cpu_and_stops_the_clock() -> None:
    m = Board()
    m.realize()
    runs = []
    m.run_cpus = lambda: runs.append(1) or True  # type: ignore[method-assign]
    m.pause()
    m.start()
    time.sleep(0.2)
    assert runs == [] and not m.clock.running
    m.resume()
    time.sleep(0.1)
    assert runs
    assert m.stop() == 0


def test_info_block_and_virtio(tmp_path) -> None:
    """A board with a virtio disk and an rng on virtio-mmio: what the monitor shows."""
    from vmforge.virtio.mmio import VirtioMmioTransport
    from vmforge_virtio.blk import VirtioBlk
    from vmforge_virtio.rng import VirtioRng

    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(1 << 20))

    class VirtioBoard(Board):
        def build(self) -> None:
            super().build()
            self.add_device(VirtioMmioTransport(VirtioBlk(drive=str(disk), format="raw",
                                                          readonly=True)), 0x1000_1000)
            self.add_device(VirtioMmioTransport(VirtioRng()), 0x1000_2000)

    m = VirtioBoard()
    m.realize()
    try:
        mon = Monitor(m, BufferChar())
        block = mon.execute("info block")
        assert str(disk) in block and "raw" in block and "1048576 bytes" in block
        assert "read-only" in block and "virtio-mmio@0x10001000" in block
        virtio = mon.execute("info virtio")
        assert "virtio-blk-device" in virtio and "virtio-rng-device" in virtio
        assert "queue 0: size=" in virtio and "not enabled" in virtio
    finally:
        m.close()


def test_info_network() -> None:
    from vmforge.config import NetdevSpec
    from vmforge.net import create_netdev
    from vmforge.virtio.mmio import VirtioMmioTransport
    from vmforge_virtio.net import VirtioNet

    class NetBoard(Board):
        def build(self) -> None:
            super().build()
            self.netdevs["n0"] = create_netdev(
                NetdevSpec("socket", "n0", {"listen": "127.0.0.1:0"}), self)
            self.netdevs["n1"] = create_netdev(
                NetdevSpec("socket", "n1", {"listen": "127.0.0.1:0"}), self)
            self.add_device(VirtioMmioTransport(VirtioNet(netdev="n0", mac="52:54:00:ab:cd:ef")),
                            0x1000_1000)

    m = NetBoard()
    m.realize()
    try:
        out = Monitor(m, BufferChar()).execute("info network")
        assert "virtio-net-device" in out and "macaddr=52:54:00:ab:cd:ef link=up" in out
        assert "n0: type=socket" in out and "n1: type=socket (no NIC)" in out
    finally:
        m.close()


def test_info_status() -> None:
    m = Board()
    m.realize()
    mon = Monitor(m, BufferChar())
    assert mon.execute("info status") == "VM status: running"
    mon.execute("stop")
    assert mon.execute("info status") == "VM status: paused"
    mon.execute("cont")
    assert mon.execute("info status") == "VM status: running"
