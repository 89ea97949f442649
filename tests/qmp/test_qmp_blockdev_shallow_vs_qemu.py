"""A shallow ``blockdev-mirror`` as libvirt does it (``sync=top`` onto an added
node whose image records the disk's backing file), the same script against
vmforge and QEMU 7.2: after the pivot the disk is the new node over the same
backing file, its image holds only what the top held (``qemu-img map``), and it
reads as the disk did (``qemu-img compare``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockjobkit import CHAIN_SIZE, make_chain, start_qemu_chain, start_vmforge_chain, wait_event
from qmpkit import connect, stop_guest

from vmforge.testing.oracles import require_program

WRITES = [("base", 0, 4 << 20, 0x11), ("top", 1 << 20, 1 << 20, 0x22)]


async def _steps(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    await c.execute("blockdev-add", {"driver": "qcow2", "node-name": "sh", "file": {
        "driver": "file", "filename": str(where / "sh.qcow2")}})
    await c.execute("blockdev-mirror", {"device": "hd0", "target": "sh", "sync": "top",
                                        "job-id": "j"})
    await wait_event(c, "BLOCK_JOB_READY", "j")
    await c.execute("block-job-complete", {"device": "j"})
    events = await wait_event(c, "BLOCK_JOB_COMPLETED", "j")
    (disk,) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
    ins = disk["inserted"]
    await c.disconnect()
    return {"disk": (ins["node-name"], Path(ins["file"]).name, ins["backing_file_depth"],
                     Path(ins["backing_file"]).name),
            "completed": [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]}


def _run(where: Path, start: Any) -> dict[str, Any]:
    qemu_img = require_program("qemu-img", "qemu-utils")
    make_chain(where, WRITES)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
                    str(where / "sh.qcow2"), str(CHAIN_SIZE)], check=True)
    guest = start(where)
    try:
        out = asyncio.run(_steps(guest.sock, where))
    finally:
        stop_guest(guest)
    mapped = json.loads(subprocess.run(
        [qemu_img, "map", "--output=json", str(where / "sh.qcow2")], check=True,
        capture_output=True, text=True).stdout)
    out["own"] = [(e["start"], e["length"]) for e in mapped if e["depth"] == 0 and e["data"]]
    same = subprocess.run([qemu_img, "compare", "-q", str(where / "sh.qcow2"),
                           str(where / "top.qcow2")])
    out["reads-as-disk"] = same.returncode == 0
    return out


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        yield _run(Path(a), start_vmforge_chain), _run(Path(b), start_qemu_chain)


def test_shallow_mirror_as_qemu(runs: Any) -> None:
    mine, theirs = runs
    assert theirs["disk"] == ("sh", "sh.qcow2", 1, "base.qcow2")
    assert theirs["own"] == [(1 << 20, 1 << 20)] and theirs["reads-as-disk"]
    assert mine == theirs
