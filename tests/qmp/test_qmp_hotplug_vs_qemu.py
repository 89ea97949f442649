"""The same hot-plug conversation with vmforge and QEMU 7.2 (``qemu-system-riscv64 -M
virt`` with two ``pcie-root-port``s, one without hot-plug): device_add's and
device_del's replies and refusals word for word, ``query-hotpluggable-cpus``, and
the DEVICE_DELETED events of a slot the guest never powered on.  Both machines stay
stopped (-S): QEMU's TCG spinning in a tight loop delays the deferred device
finalisation its DEVICE_DELETED waits for."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError
from qmpkit import Guest, connect, next_events, stop_guest, wait_for_path, write_images

from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.qmp import QmpServer
from vmforge.testing.oracles import require_program

DEVICES = ["pcie-root-port,id=rp0,chassis=1,slot=1",
           "pcie-root-port,id=rp1,chassis=2,slot=2,hotplug=off",
           "virtio-blk-pci,id=b0,drive=d2,bus=rp1"]
BLK = {"driver": "virtio-blk-pci"}
#: a step of the script: take the two DEVICE_DELETED events (QEMU drops the drive just after)
EVENTS = "<events>"
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("query-hotpluggable-cpus", {}),
    ("device_add", {"driver": "no-such-device", "id": "x"}),
    ("device_add", {"id": "x"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "nobus"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "pcie.0"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "rp1"}),
    ("device_add", {**BLK, "id": "hd1", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "nodrive", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "rp0", "bogus": "1"}),
    ("device_add", {**BLK, "id": "h d", "drive": "d1", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd2", "drive": "d2", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "b0", "drive": "d1", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "rp0"}),
    ("device_add", {**BLK, "id": "hd3", "drive": "d1", "bus": "rp0"}),
    ("device_del", {"id": "nosuch"}),
    ("device_del", {}),
    ("device_del", {"id": "b0"}),
    ("device_del", {"id": "rp0"}),
    ("device_del", {"id": "hd1"}),          # never powered on: it goes at once
    (EVENTS, {}),
    ("device_del", {"id": "hd1"}),
    ("device_add", {**BLK, "id": "hd1", "drive": "d1", "bus": "rp0"}),   # d1 went with it
    ("device_add", {**BLK, "id": "hd1", "drive": "d3", "bus": "rp0"}),
]


def _disks(where: Path) -> list[str]:
    _, disk = write_images(where)
    out = [f"file={disk},format=raw,if=none,id=d1"]
    for n in (2, 3):
        (where / f"disk{n}.raw").write_bytes(bytes(1 << 20))
        out.append(f"file={where / f'disk{n}.raw'},format=raw,if=none,id=d{n}")
    return out


def _start_vmforge(where: Path) -> Guest:
    from vmforge_riscv_virt.machine import RiscvVirt

    drives = _disks(where)
    machine = RiscvVirt(MachineConfig(
        machine="riscv-virt", bios="none", kernel=str(where / "kernel.bin"), serial=["null"],
        drives=[DriveSpec.parse(d) for d in drives],
        devices=[DeviceSpec.parse(d) for d in DEVICES]))
    sock = where / "vmforge.qmp"
    server = QmpServer(machine, f"unix:{sock},server=on,wait=off").start()
    machine.pause()
    machine.start()
    return Guest(sock, machine=machine, server=server)


def _start_qemu(where: Path) -> Guest:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    drives = _disks(where)
    sock = where / "qemu.qmp"
    args = [qemu, "-M", "virt", "-bios", "none", "-kernel", str(where / "kernel.bin"),
            "-display", "none", "-serial", "none", "-monitor", "none",
            "-qmp", f"unix:{sock},server=on,wait=off", "-S"]
    for d in drives:
        args += ["-drive", d]
    for d in DEVICES:
        args += ["-device", d]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_path(sock, proc)
    except AssertionError:
        proc.kill()
        raise
    return Guest(sock, proc=proc)


async def _converse(sock: Path) -> dict[str, Any]:
    c = await connect(sock)
    replies: list[Any] = []
    events: list[dict[str, Any]] = []
    for name, args in SCRIPT:
        if name == EVENTS:
            events = [{k: v for k, v in e.items() if k != "timestamp"}
                      for e in await next_events(c, 2)]
            await asyncio.sleep(1)
            replies.append(None)
            continue
        try:
            replies.append({"return": await c.execute(name, args)})
        except ExecuteError as exc:
            replies.append({"class": exc.error_class, "desc": exc.error.error.desc})
    names = {x["name"] for x in await c.execute("query-commands")}
    await c.disconnect()
    return {"replies": replies, "events": events, "commands": names}


def _conversation(start: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vmf-hpq-") as name:
        guest = start(Path(name))
        try:
            return asyncio.run(_converse(guest.sock))
        finally:
            stop_guest(guest)


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, Any], dict[str, Any]]:
    return _conversation(_start_vmforge), _conversation(_start_qemu)


@pytest.mark.parametrize("index", range(len(SCRIPT)),
                         ids=[f"{i}-{n}" for i, (n, _) in enumerate(SCRIPT)])
def test_reply_as_qemus(both: tuple[dict[str, Any], dict[str, Any]], index: int) -> None:
    mine, qemu = both[0]["replies"][index], both[1]["replies"][index]
    assert mine == qemu, SCRIPT[index]


def test_device_deleted_events_as_qemus(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    assert both[0]["events"] == both[1]["events"] == [
        {"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/hd1/virtio-backend"}},
        {"event": "DEVICE_DELETED", "data": {"device": "hd1",
                                             "path": "/machine/peripheral/hd1"}}]


def test_commands_listed(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    wanted = {"device_add", "device_del", "query-hotpluggable-cpus"}
    assert wanted <= both[0]["commands"] and wanted <= both[1]["commands"]
