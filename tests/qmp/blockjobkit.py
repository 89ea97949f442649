"""Helpers of the block-job QMP tests: a qcow2 chain, vmforge and QEMU started
on it with a QMP socket, and waiting for a job's event."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qmpkit import SPIN, Guest, wait_for_path

from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing.oracles import require_program

CHAIN_SIZE = 8 << 20


def make_chain(where: Path, writes: list[tuple[str, int, int, int]]) -> Path:
    """``base.qcow2`` <- ``top.qcow2`` (backing named relatively), with ``writes``
    (layer, offset, length, byte) done by qemu-io; returns the top."""
    qemu_img = require_program("qemu-img", "qemu-utils")
    qemu_io = require_program("qemu-io", "qemu-utils")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(where / "base.qcow2"),
                    str(CHAIN_SIZE)], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(where / "top.qcow2")], check=True)
    for layer, offset, length, byte in writes:
        subprocess.run([qemu_io, "-c", f"write -P {byte} {offset} {length}",
                        str(where / f"{layer}.qcow2")], check=True, capture_output=True)
    (where / "kernel.bin").write_bytes(SPIN)
    return where / "top.qcow2"


def start_vmforge_chain(where: Path) -> Guest:
    """vmforge's riscv-virt, paused (``-S``), on ``top.qcow2`` as ``hd0``."""
    from vmforge_riscv_virt.machine import RiscvVirt

    machine = RiscvVirt(MachineConfig(
        machine="riscv-virt", bios="none", kernel=str(where / "kernel.bin"),
        serial=["null"],
        drives=[DriveSpec.parse(f"file={where / 'top.qcow2'},format=qcow2,if=none,id=hd0")],
        devices=[DeviceSpec.parse("virtio-blk-device,drive=hd0")]))
    sock = where / "vmforge.qmp"
    server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
    machine.pause()
    machine.start()
    return Guest(sock, machine=machine, server=server)


def start_qemu_chain(where: Path) -> Guest:
    """QEMU 7.2's ``-M virt -S`` on ``top.qcow2`` as ``hd0``."""
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    sock = where / "qemu.qmp"
    proc = subprocess.Popen(
        [qemu, "-M", "virt", "-bios", "none", "-kernel", str(where / "kernel.bin"),
         "-display", "none", "-serial", "none", "-monitor", "none", "-S",
         "-drive", f"file={where / 'top.qcow2'},format=qcow2,if=none,id=hd0",
         "-device", "virtio-blk-device,drive=hd0",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_path(sock, proc, 20)
    except AssertionError:
        proc.kill()
        raise
    return Guest(sock, proc=proc)


async def wait_event(client: QMPClient, name: str, job: str, timeout: float = 60.0,
                     **match: Any) -> list[dict[str, Any]]:
    """The events up to and with ``name`` for job ``job`` (its ``device`` or ``id``
    in the data; ``match``: more data values it must have)."""
    out: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(client.events.get(), timeout)
        event = json.loads(bytes(msg))
        out.append(event)
        data = event.get("data", {})
        if event["event"] == name and job in (data.get("device"), data.get("id")) and \
                all(data.get(k) == v for k, v in match.items()):
            return out
