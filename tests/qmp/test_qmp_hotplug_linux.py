"""PCI Express hot-plug under a Linux guest (guests/build.py's kernel with pciehp) on
riscv-virt, driven over QMP as a QEMU user does it: ``-device pcie-root-port``, then
``device_add virtio-blk-pci,...,bus=rp0`` makes a disk appear in the guest (read and
written through), ``device_del`` removes it once the guest lets go (the attention
button, the guest powers the slot off) with QEMU's DEVICE_DELETED events, and a
slot takes another disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmpkit import connect, error_of, next_events

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing.migration_kit import guest_file

ROOT = Path(__file__).resolve().parents[2]
PATTERN = b"vmforge-hotplug-read-pattern\n"
#: pciehp polls the slots: on a PLIC board (no MSI) the port's hot-plug interrupt and
#: the disk's INTx are one shared line, and Linux 6.1 removing the disk from pciehp's
#: IRQ thread waits in free_irq for that same thread -- device_del never completes,
#: under QEMU 7.2 alike (tried: the guest lets go, DEVICE_DELETED never comes)
PCIEHP_POLL = "pciehp.pciehp_poll_mode=1 pciehp.pciehp_poll_time=1"
WRITTEN = b"written-by-the-guest-after-hotplug"
OTHER = b"the-second-disk\n"


@pytest.fixture(scope="module")
def guest() -> Iterator[tuple[Any, BufferChar, Path, Path]]:
    import tempfile

    from vmforge_riscv_virt.machine import RiscvVirt

    kernel, initrd = guest_file(ROOT, "linux-riscv64"), guest_file(ROOT, "initramfs-riscv64")
    with tempfile.TemporaryDirectory(prefix="vmf-hp-") as name:
        where = Path(name)
        disk, other = where / "d1.raw", where / "d3.raw"
        for path, head in ((disk, PATTERN), (other, OTHER)):
            with open(path, "wb") as f:
                f.write(head)
                f.truncate(4 << 20)
        console = BufferChar()
        machine = RiscvVirt(MachineConfig(
            machine="riscv-virt", memory=256 << 20, kernel=kernel, initrd=initrd,
            append=f"console=ttyS0 {PCIEHP_POLL}", serial=[console],
            drives=[DriveSpec.parse(f"file={disk},format=raw,if=none,id=d1"),
                    DriveSpec.parse(f"file={other},format=raw,if=none,id=d3")],
            devices=[DeviceSpec.parse("pcie-root-port,id=rp0,chassis=1,slot=1"),
                     DeviceSpec.parse("pcie-root-port,id=rp1,chassis=2,slot=2")]))
        sock = where / "hp.qmp"
        server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
        machine.start()
        try:
            console.wait_for(b"/# ", timeout=120)
            yield machine, console, sock, disk
        finally:
            machine.stop(10)
            server.close()


def _shell(console: BufferChar, command: str, timeout: float = 60) -> str:
    """Run ``command`` in the guest's shell; its output (between two markers)."""
    console.clear()
    console.feed(f"echo BEGIN; {command}; echo END\n".encode())
    console.wait_for(b"\r\nEND\r\n", timeout=timeout)
    text = console.output.decode(errors="replace").replace("\r", "")
    body = "\n" + text.split("\nBEGIN\n", 1)[1]
    return body.rsplit("\nEND\n", 1)[0][1:]


def _wait_in_guest(console: BufferChar, condition: str, timeout: float = 60) -> None:
    out = _shell(console, f"n=0; while ! {condition}; do n=$((n+1)); "
                 f"[ $n -gt {int(timeout)} ] && break; sleep 1; done; "
                 f"{condition} && echo MET || echo UNMET", timeout + 30)
    assert out.strip().endswith("MET") and not out.strip().endswith("UNMET"), out


def test_linux_sees_the_hotplug_slots(guest: tuple[Any, BufferChar, Path, Path]) -> None:
    _, console, _, _ = guest
    slots = _shell(console, "ls /sys/bus/pci/slots/").split()
    assert slots == ["1", "2"]
    assert _shell(console, "cat /sys/bus/pci/slots/1/address").strip() == "0000:01:00"
    bound = _shell(console, "ls /sys/bus/pci_express/drivers/pciehp/").split()
    assert "0000:00:01.0:pcie004" in bound and "0000:00:02.0:pcie004" in bound
    # the ports themselves, as QEMU's: 1b36:000c, a PCI bridge
    assert _shell(console, "cat /sys/bus/pci/devices/0000:00:01.0/vendor "
                  "/sys/bus/pci/devices/0000:00:01.0/device "
                  "/sys/bus/pci/devices/0000:00:01.0/class").split() == [
        "0x1b36", "0x000c", "0x060400"]
    assert _shell(console, "ls /sys/block/").split() == []


def test_device_add_del_add(guest: tuple[Any, BufferChar, Path, Path]) -> None:
    machine, console, sock, disk = guest

    async def run() -> None:
        c = await connect(sock)
        assert await c.execute("device_add", {"driver": "virtio-blk-pci", "id": "hd1",
                                              "drive": "d1", "bus": "rp0"}) == {}
        await asyncio.to_thread(_wait_in_guest, console, "[ -b /dev/vda ]")
        head = await asyncio.to_thread(_shell, console,
                                       f"dd if=/dev/vda bs={len(PATTERN)} count=1 2>/dev/null")
        assert head.strip() == PATTERN.decode().strip()
        assert (await error_of(c, "device_add", {"driver": "virtio-blk-pci", "id": "hd2",
                                                 "drive": "d1", "bus": "rp1"}))["desc"] == \
            "Drive 'd1' is already in use by another device"
        await asyncio.to_thread(
            _shell, console, f"printf {WRITTEN.decode()} | dd of=/dev/vda bs=512 seek=8 "
            "conv=sync 2>/dev/null; sync")
        deadline = time.monotonic() + 30
        while disk.read_bytes()[4096:4096 + len(WRITTEN)] != WRITTEN:
            assert time.monotonic() < deadline, "the guest's write never reached the image"
            await asyncio.sleep(0.2)
        # device_del: the guest is asked, lets the disk go, powers the slot off
        assert await c.execute("device_del", {"id": "hd1"}) == {}
        assert (await error_of(c, "device_del", {"id": "hd1"}))["desc"] == \
            "Device hd1 is already in the process of unplug"
        events = await next_events(c, 2, timeout=60)
        assert [e["event"] for e in events] == ["DEVICE_DELETED", "DEVICE_DELETED"]
        assert events[0]["data"] == {"path": "/machine/peripheral/hd1/virtio-backend"}
        assert events[1]["data"] == {"device": "hd1", "path": "/machine/peripheral/hd1"}
        await asyncio.to_thread(_wait_in_guest, console, "[ ! -b /dev/vda ]")
        assert (await error_of(c, "device_del", {"id": "hd1"})) == {
            "class": "DeviceNotFound", "desc": "Device 'hd1' not found"}
        # the -drive went with the device (as QEMU's); another disk, on the other slot
        assert (await error_of(c, "device_add", {"driver": "virtio-blk-pci", "id": "hd1",
                                                 "drive": "d1", "bus": "rp0"}))["desc"] == \
            "Property 'virtio-blk-device.drive' can't find value 'd1'"
        assert await c.execute("device_add", {"driver": "virtio-blk-pci", "id": "hd1",
                                              "drive": "d3", "bus": "rp1"}) == {}
        await asyncio.to_thread(_wait_in_guest, console, "[ -b /dev/vda ]")
        again = await asyncio.to_thread(
            _shell, console, f"dd if=/dev/vda bs={len(OTHER)} count=1 2>/dev/null")
        assert again.strip() == OTHER.decode().strip()
        await c.disconnect()

    asyncio.run(run())
    assert machine.exit_status is None            # still running
