"""Dirty bitmaps on a disk's node, the same QMP script against vmforge and QEMU 7.2
(``qemu-system-riscv64 -M virt -S`` on a qcow2 chain, through ``qemu.qmp``):
``block-dirty-bitmap-add`` (transient, persistent, disabled, a granularity),
``-disable``/``-enable``/``-clear``/``-remove`` and their refusals, the
``dirty-bitmaps`` ``query-block`` shows, and after ``quit`` the persistent
bitmaps the image holds (``qemu-img info``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockjobkit import make_chain, start_qemu_chain, start_vmforge_chain
from qmpkit import Guest, connect, error_of, stop_guest

from vmforge.testing.oracles import require_program


async def _steps(guest: Guest) -> dict[str, Any]:
    c = await connect(guest.sock)
    out: dict[str, Any] = {}
    err: dict[str, Any] = {}
    out["errors"] = err

    async def bitmaps() -> Any:
        (disk, *_) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
        return disk["inserted"].get("dirty-bitmaps")

    top = (await c.execute("query-block"))[0]["inserted"]["node-name"]
    out["none"] = await bitmaps()
    out["add"] = await c.execute("block-dirty-bitmap-add", {"node": "hd0", "name": "b0"})
    await c.execute("block-dirty-bitmap-add", {"node": top, "name": "p0", "persistent": True,
                                               "granularity": 131072})
    await c.execute("block-dirty-bitmap-add", {"node": "hd0", "name": "d0",
                                               "disabled": True, "persistent": True})
    await c.execute("block-dirty-bitmap-add", {"node": "hd0", "name": "gone",
                                               "persistent": True})
    out["added"] = await bitmaps()
    err["add-again"] = await error_of(c, "block-dirty-bitmap-add", {"node": "hd0",
                                                                    "name": "p0"})
    err["add-empty"] = await error_of(c, "block-dirty-bitmap-add", {"node": "hd0",
                                                                    "name": ""})
    err["add-granularity"] = await error_of(c, "block-dirty-bitmap-add", {
        "node": "hd0", "name": "g", "granularity": 1000})
    err["add-small"] = await error_of(c, "block-dirty-bitmap-add", {
        "node": "hd0", "name": "g", "granularity": 256})
    err["add-nosuch"] = await error_of(c, "block-dirty-bitmap-add", {"node": "nosuch",
                                                                     "name": "g"})
    for verb in ("remove", "clear", "enable", "disable"):
        err[f"{verb}-nosuch-node"] = await error_of(c, f"block-dirty-bitmap-{verb}", {
            "node": "nosuch", "name": "b0"})
        err[f"{verb}-nosuch"] = await error_of(c, f"block-dirty-bitmap-{verb}", {
            "node": "hd0", "name": "nosuch"})
    out["disable"] = await c.execute("block-dirty-bitmap-disable", {"node": "hd0",
                                                                    "name": "b0"})
    out["enable"] = await c.execute("block-dirty-bitmap-enable", {"node": "hd0",
                                                                  "name": "d0"})
    out["clear"] = await c.execute("block-dirty-bitmap-clear", {"node": "hd0",
                                                                "name": "b0"})
    out["remove"] = await c.execute("block-dirty-bitmap-remove", {"node": "hd0",
                                                                  "name": "gone"})
    out["changed"] = await bitmaps()
    try:
        await c.execute("quit")
    except Exception:      # (QEMU may close the connection before it answers)
        pass
    with contextlib.suppress(EOFError):      # the server may hang up first, as QEMU does
        await c.disconnect()
    return out


def _image_bitmaps(path: Path) -> list[dict[str, Any]]:
    qemu_img = require_program("qemu-img", "qemu-utils")
    info = json.loads(subprocess.run([qemu_img, "info", "--output=json", str(path)],
                                     check=True, capture_output=True, text=True).stdout)
    return sorted(info["format-specific"]["data"].get("bitmaps", []),
                  key=lambda b: b["name"])


def _run(where: Path, start: Any) -> dict[str, Any]:
    make_chain(where, [])
    guest = start(where)
    try:
        out = asyncio.run(_steps(guest))
        if guest.proc is not None:
            guest.proc.wait(30)
    finally:
        stop_guest(guest)
    out["image"] = _image_bitmaps(where / "top.qcow2")
    return out


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        yield _run(Path(a), start_vmforge_chain), _run(Path(b), start_qemu_chain)


def test_errors_are_qemus(runs: Any) -> None:
    mine, theirs = runs
    assert mine["errors"] == theirs["errors"]


def test_bitmaps_listed_as_qemu(runs: Any) -> None:
    mine, theirs = runs
    for key in ("none", "add", "added", "disable", "enable", "clear", "remove", "changed"):
        assert mine[key] == theirs[key], key


def test_persistent_bitmaps_in_the_image(runs: Any) -> None:
    mine, theirs = runs
    assert theirs["image"], "QEMU stored none: the script no longer tests this"
    assert mine["image"] == theirs["image"]
