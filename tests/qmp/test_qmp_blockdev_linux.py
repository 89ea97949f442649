"""``blockdev-*`` under a Linux guest that writes (the checksummed pattern of
:mod:`vmforge.testing.disk_pattern`, as in ``test_qmp_block_jobs_linux``): a
``blockdev-mirror`` onto an added qcow2 node, held at a low speed until the guest
has written during it, then pivoted; a ``blockdev-snapshot`` onto an added
overlay while the writer runs; a second ``blockdev-mirror`` of the whole chain
onto another added node, pivoted, and a persistent dirty bitmap added on it
recording the writes that follow (stored into the image).  The guest reads back every block it wrote
after each step, the disk's node names and files are what QEMU shows, and the
host checks every block of the last copy (``qemu-img check``, read by vmforge and
by qemu-img)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from blockjobkit import wait_event
from qemu.qmp import QMPClient
from qmpkit import connect
from test_qmp_block_jobs_linux import (
    DISK_BLOCKS,
    SLOW,
    WRITER_BLOCKS,
    WRITES_DURING,
    Shell,
    _check_image,
    _machine,
    chain,
)

from vmforge.block.backend import create_image
from vmforge.chardev import BufferChar
from vmforge.testing import disk_pattern as dp
from vmforge.testing.oracles import require_program

__all__ = ["chain"]      # (the fixture, shared with the block-jobs test)


async def _disk(c: QMPClient) -> tuple[str, str, int]:
    (disk,) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
    ins = disk["inserted"]
    return ins["node-name"], Path(ins["file"]).name, ins["backing_file_depth"]


def _add(d: Path, name: str) -> dict[str, Any]:
    create_image("qcow2", str(d / f"{name}.qcow2"), DISK_BLOCKS * dp.BLOCK)
    return {"driver": "qcow2", "node-name": name, "backing": None,
            "file": {"driver": "file", "filename": str(d / f"{name}.qcow2")}}


def test_blockdev_jobs_while_linux_writes(chain: Path, sockdir: Path) -> None:
    d = sockdir
    console = BufferChar()
    machine, server = _machine(chain, console, d / "vm.qmp")
    shell = Shell(console)
    try:
        shell.load()
        shell.run(f'vmf_start 2 "{" ".join(map(str, WRITER_BLOCKS))}"; echo VMF-STARTED',
                  b"VMF-STARTED")

        async def writes(n: int = WRITES_DURING) -> None:
            before = await asyncio.to_thread(shell.count)
            while await asyncio.to_thread(shell.count) < before + n:
                await asyncio.sleep(0.2)

        async def mirror(c: QMPClient, target: str) -> None:
            await c.execute("blockdev-mirror", {"device": "hd0", "target": target,
                                                "sync": "full", "speed": SLOW,
                                                "job-id": target})
            await writes()
            (info,) = await c.execute("query-block-jobs")
            assert info["status"] == "running" and info["offset"] < info["len"], info
            await c.execute("block-job-set-speed", {"device": target, "speed": 0})
            await wait_event(c, "BLOCK_JOB_READY", target, timeout=300)
            await c.execute("block-job-complete", {"device": target})
            (done,) = [e for e in await wait_event(c, "BLOCK_JOB_COMPLETED", target,
                                                   timeout=300)
                       if e["event"] == "BLOCK_JOB_COMPLETED"]
            assert "error" not in done["data"], done

        async def run() -> None:
            c = await connect(d / "vm.qmp")
            await c.execute("blockdev-add", _add(d, "m1"))
            await mirror(c, "m1")
            assert await _disk(c) == ("m1", "m1.qcow2", 0)
            await asyncio.to_thread(shell.held, lambda e: None)

            await c.execute("blockdev-add", _add(d, "ov"))
            await c.execute("blockdev-snapshot", {"node": "m1", "overlay": "ov"})
            assert await _disk(c) == ("ov", "ov.qcow2", 1)
            await writes()
            await asyncio.to_thread(shell.held, lambda e: None)

            await c.execute("blockdev-add", _add(d, "m2"))
            await mirror(c, "m2")
            assert await _disk(c) == ("m2", "m2.qcow2", 0)
            # a persistent bitmap on the new node records the guest's writes
            await c.execute("block-dirty-bitmap-add", {"node": "m2", "name": "lw",
                                                       "persistent": True})
            await writes()
            (disk,) = [x for x in await c.execute("query-block") if x["device"] == "hd0"]
            (bitmap,) = disk["inserted"]["dirty-bitmaps"]
            assert bitmap["name"] == "lw" and bitmap["count"] > 0, bitmap
            await asyncio.to_thread(shell.held, lambda e: None)
            for name in ("m1", "ov"):       # (no longer in the chain: free)
                await c.execute("blockdev-del", {"node-name": name})
            await c.disconnect()

        asyncio.run(run())
        final = shell.finish(WRITER_BLOCKS)
    finally:
        machine.stop(10)
        server.close()
    _check_image(d / "m2.qcow2", final)
    info = json.loads(subprocess.run(
        [require_program("qemu-img", "qemu-utils"), "info", "--output=json",
         str(d / "m2.qcow2")], check=True, capture_output=True, text=True).stdout)
    assert info["format-specific"]["data"]["bitmaps"] == [
        {"flags": ["auto"], "name": "lw", "granularity": 65536}]
