"""``-blockdev`` on the command line as libvirt writes it (a ``file`` node and a
format node over it by name, a chain of such nodes tied by ``backing``, and the
dotted inline form), the same QMP script against ``vmforge run`` and
``qemu-system-riscv64`` 7.2: the disks ``query-block`` shows (no device name,
the node names given), ``query-named-block-nodes``, jobs and bitmaps on the
nodes by name (a ``blockdev-mirror`` with its pivot), and the refusals of a job
without a job id (QEMU's default, the empty device name)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockjobkit import wait_event
from qmpkit import SPIN, Guest, connect, error_of, stop_guest, wait_for_path
from test_qmp_blockdev_vs_qemu import _image_file

from vmforge.testing.oracles import require_program

SIZE = 8 << 20


def _blockdevs(where: Path) -> list[str]:
    def js(**opts: Any) -> str:
        return json.dumps({k.replace("_", "-"): v for k, v in opts.items()})

    return [
        js(driver="file", filename=str(where / "base.qcow2"), node_name="base-file"),
        js(driver="qcow2", file="base-file", node_name="base-fmt", read_only=True),
        js(driver="file", filename=str(where / "top.qcow2"), node_name="top-file"),
        js(driver="qcow2", file="top-file", node_name="top-fmt", backing="base-fmt"),
        f"driver=qcow2,node-name=solo,file.driver=file,file.filename={where / 'solo.qcow2'}",
    ]


def _args(where: Path) -> list[str]:
    out = ["-M", "", "-bios", "none", "-kernel", str(where / "k.bin"),
           "-display", "none", "-serial", "none", "-S"]
    for spec in _blockdevs(where):
        out += ["-blockdev", spec]
    for node in ("top-fmt", "solo"):
        out += ["-device", f"virtio-blk-device,drive={node}"]
    return out


def _start(where: Path, qemu: bool) -> Guest:
    qemu_img = require_program("qemu-img", "qemu-utils")
    for name, extra in [("base.qcow2", []), ("top.qcow2", ["-b", "base.qcow2", "-F", "qcow2"]),
                        ("solo.qcow2", []), ("m.qcow2", [])]:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", *extra, str(where / name),
                        str(SIZE)], check=True)
    (where / "k.bin").write_bytes(SPIN)
    sock = where / "vm.qmp"
    args = _args(where)
    if qemu:
        args[1] = "virt"
        cmd = [require_program("qemu-system-riscv64", "qemu-system-misc"), *args,
               "-monitor", "none"]
    else:
        args[1] = "riscv-virt"
        cmd = [sys.executable, "-m", "vmforge.cli.main", "run", *args]
    proc = subprocess.Popen([*cmd, "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_path(sock, proc, 30)
    except AssertionError:
        proc.kill()
        raise
    return Guest(sock, proc=proc)


async def _steps(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    out: dict[str, Any] = {}
    err: dict[str, Any] = {}

    async def disks() -> list[tuple[Any, ...]]:
        # (not the qdev path: vmforge's counts the board's virtio-mmio transports)
        return [(d["device"], d["inserted"]["node-name"], d["inserted"]["drv"],
                 _image_file(d["inserted"]["file"]), d["inserted"]["backing_file_depth"],
                 d["inserted"]["ro"])
                for d in await c.execute("query-block") if "inserted" in d]

    out["disks"] = await disks()
    out["nodes"] = sorted(("#auto" if n["node-name"].startswith("#") else n["node-name"],
                           n["drv"], n["ro"], _image_file(n["file"]))
                          for n in await c.execute("query-named-block-nodes"))
    err["mirror-no-id"] = await error_of(c, "drive-mirror", {
        "device": "solo", "target": str(where / "x.qcow2"), "sync": "full",
        "mode": "existing"})
    err["stream-no-id"] = await error_of(c, "block-stream", {"device": "top-fmt"})
    err["del-disk"] = await error_of(c, "blockdev-del", {"node-name": "top-fmt"})
    err["del-backing"] = await error_of(c, "blockdev-del", {"node-name": "base-fmt"})
    out["bitmap"] = await c.execute("block-dirty-bitmap-add", {"node": "top-fmt",
                                                               "name": "b"})
    await c.execute("blockdev-add", {"driver": "qcow2", "node-name": "m", "file": {
        "driver": "file", "filename": str(where / "m.qcow2")}})
    out["mirror"] = await c.execute("blockdev-mirror", {
        "device": "top-fmt", "target": "m", "sync": "full", "job-id": "j"})
    await wait_event(c, "BLOCK_JOB_READY", "j")
    await c.execute("block-job-complete", {"device": "j"})
    await wait_event(c, "BLOCK_JOB_COMPLETED", "j")
    out["pivoted"] = await disks()
    out["errors"] = {k: {**v, "desc": v["desc"].replace(str(where), "@")}
                     for k, v in err.items()}
    await c.disconnect()
    return out


def _run(where: Path, qemu: bool) -> dict[str, Any]:
    guest = _start(where, qemu)
    try:
        return asyncio.run(_steps(guest.sock, where))
    finally:
        stop_guest(guest)


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        yield _run(Path(a), False), _run(Path(b), True)


def test_disks_and_nodes_by_name(runs: Any) -> None:
    mine, theirs = runs
    for key in ("disks", "nodes", "bitmap", "mirror", "pivoted"):
        assert mine[key] == theirs[key], key


def test_errors_are_qemus(runs: Any) -> None:
    mine, theirs = runs
    assert mine["errors"] == theirs["errors"]
