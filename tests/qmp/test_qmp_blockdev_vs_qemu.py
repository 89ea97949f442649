"""The ``blockdev-*`` way of driving block devices, the same QMP script against
vmforge and QEMU 7.2 (``qemu-system-riscv64 -M virt -S``, a qcow2 chain on a
virtio-blk disk) through ``qemu.qmp``: ``blockdev-add`` of file, qcow2 and raw
nodes (a file node by name or inline) and its refusals, ``blockdev-del`` of
nodes in use and free, ``blockdev-mirror`` onto an added node with its pivot,
``blockdev-snapshot`` onto an added overlay, ``blockdev-backup`` onto an added
node, the node names ``query-block`` shows and ``query-named-block-nodes``
lists.  Replies, errors (class and text), events and the resulting images
(``qemu-img compare``) must be QEMU's."""

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
from qmpkit import Guest, connect, error_of, shape, stop_guest

from vmforge.testing.oracles import require_program

WRITES = [("base", 0, 2 << 20, 0x11), ("top", 1 << 20, 1 << 20, 0x22)]


def _image_file(name: str) -> str:
    """An image's file name (QEMU's json: name of an overlay put over a node: its file's)."""
    if name.startswith("json:"):
        name = json.loads(name[5:])["file"]["filename"]
    return Path(name).name


def _events(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The events, without the pause and resume of a job QEMU's drained start makes."""
    out: list[tuple[str, Any]] = []
    for e in events:
        if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["status"] == "running" and \
                out and out[-1][0] == "JOB_STATUS_CHANGE" and \
                out[-1][1]["status"] == "paused":
            out.pop()
            continue
        out.append((e["event"], e.get("data")))
    return out


def _file(path: str) -> dict[str, str]:
    return {"driver": "file", "filename": path}


async def _steps(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    out: dict[str, Any] = {"events": []}
    err: dict[str, Any] = {}
    out["errors"] = err

    def path(name: str) -> str:
        return str(where / name)

    async def disk() -> dict[str, Any]:
        (d, *_) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
        return dict(d["inserted"])

    async def nodes() -> list[tuple[str, str, bool, str]]:
        listed = await c.execute("query-named-block-nodes", {"flat": True})
        out.setdefault("nodes-shape", [shape(n) for n in listed if n["node-name"] == "r1"])
        return sorted((n["node-name"] if not n["node-name"].startswith("#") else "#auto",
                       n["drv"], n["ro"], _image_file(n["image"]["filename"]))
                      for n in listed)

    first = await disk()
    for flat in (True, False):      # backing images inside each entry unless flat
        out[f"nested-{flat}"] = sorted(
            (Path(n["image"]["filename"]).name, "backing-image" in n["image"])
            for n in await c.execute("query-named-block-nodes", {"flat": flat}))
    out["auto-name"] = first["node-name"].startswith("#block")
    err["add-no-name"] = await error_of(c, "blockdev-add", _file(path("m.qcow2")))
    err["add-absent"] = await error_of(c, "blockdev-add", {
        **_file(path("absent.qcow2")), "node-name": "f0"})
    err["add-bad-driver"] = await error_of(c, "blockdev-add", {"driver": "bogus",
                                                               "node-name": "x"})
    err["add-bad-name"] = await error_of(c, "blockdev-add", {
        **_file(path("m.qcow2")), "node-name": "1bad"})
    err["add-no-filename"] = await error_of(c, "blockdev-add", {"driver": "file",
                                                                "node-name": "f0"})
    err["add-no-file"] = await error_of(c, "blockdev-add", {"driver": "qcow2",
                                                            "node-name": "q0"})
    err["add-unexpected"] = await error_of(c, "blockdev-add", {
        **_file(path("m.qcow2")), "node-name": "f0", "bogus": 1})
    err["add-disk-top"] = await error_of(c, "blockdev-add", {
        "driver": "qcow2", "node-name": "lk", "file": _file(path("top.qcow2"))})
    err["add-disk-backing"] = await error_of(c, "blockdev-add", {
        "driver": "qcow2", "node-name": "lk", "file": _file(path("base.qcow2"))})
    out["add-file"] = await c.execute("blockdev-add", {**_file(path("m.qcow2")),
                                                       "node-name": "f1"})
    err["add-duplicate"] = await error_of(c, "blockdev-add", {
        **_file(path("m.qcow2")), "node-name": "f1"})
    out["add-qcow2"] = await c.execute("blockdev-add", {"driver": "qcow2", "file": "f1",
                                                        "node-name": "q1"})
    err["add-file-nosuch"] = await error_of(c, "blockdev-add", {
        "driver": "qcow2", "file": "nosuch", "node-name": "q2"})
    err["add-not-qcow2"] = await error_of(c, "blockdev-add", {
        "driver": "qcow2", "file": _file(path("r.raw")), "node-name": "q3"})
    await c.execute("blockdev-add", {"driver": "raw", "file": _file(path("r.raw")),
                                     "node-name": "r1", "read-only": True})
    await c.execute("blockdev-add", {"driver": "qcow2", "file": _file(path("ov.qcow2")),
                                     "node-name": "ov", "backing": None})
    await c.execute("blockdev-add", {"driver": "qcow2", "file": _file(path("b.qcow2")),
                                     "node-name": "b1"})
    await c.execute("blockdev-add", {"driver": "qcow2", "file": _file(path("gone.qcow2")),
                                     "node-name": "gone"})
    # a node over a backing node (the file its image records)
    await c.execute("blockdev-add", {"driver": "qcow2", "file": _file(path("hbase.qcow2")),
                                     "node-name": "hbase"})
    out["add-backing"] = await c.execute("blockdev-add", {
        "driver": "qcow2", "file": _file(path("hb.qcow2")), "node-name": "hb",
        "backing": "hbase"})
    err["add-backing-nosuch"] = await error_of(c, "blockdev-add", {
        "driver": "qcow2", "file": _file(path("hb2.qcow2")), "node-name": "hb2",
        "backing": "nosuch"})
    err["add-backing-raw"] = await error_of(c, "blockdev-add", {
        "driver": "raw", "file": _file(path("hb2.qcow2")), "node-name": "hb2",
        "backing": "hbase"})
    err["del-backing-node"] = await error_of(c, "blockdev-del", {"node-name": "hbase"})
    err["snapshot-has-backing"] = await error_of(c, "blockdev-snapshot", {
        "node": "hd0", "overlay": "hb"})
    out["nodes-added"] = await nodes()
    err["del-child"] = await error_of(c, "blockdev-del", {"node-name": "f1"})
    err["del-nosuch"] = await error_of(c, "blockdev-del", {"node-name": "nosuch"})
    err["del-disk"] = await error_of(c, "blockdev-del", {"node-name": first["node-name"]})
    out["del"] = await c.execute("blockdev-del", {"node-name": "gone"})
    err["del-again"] = await error_of(c, "blockdev-del", {"node-name": "gone"})

    err["mirror-target-nosuch"] = await error_of(c, "blockdev-mirror", {
        "device": "hd0", "target": "nosuch", "sync": "full"})
    err["mirror-device-nosuch"] = await error_of(c, "blockdev-mirror", {
        "device": "nosuch", "target": "q1", "sync": "full"})
    err["mirror-read-only"] = await error_of(c, "blockdev-mirror", {
        "device": "hd0", "target": "r1", "sync": "full"})
    err["mirror-no-sync"] = await error_of(c, "blockdev-mirror", {
        "device": "hd0", "target": "q1"})
    err["backup-target-nosuch"] = await error_of(c, "blockdev-backup", {
        "device": "hd0", "target": "nosuch", "sync": "full"})
    err["snapshot-nosuch"] = await error_of(c, "blockdev-snapshot", {
        "node": "nosuch", "overlay": "ov"})
    err["snapshot-overlay-nosuch"] = await error_of(c, "blockdev-snapshot", {
        "node": "hd0", "overlay": "nosuch"})
    err["snapshot-raw"] = await error_of(c, "blockdev-snapshot", {
        "node": "hd0", "overlay": "r1"})

    # mirror onto q1 (by the disk's node name), pivot: the disk is q1
    out["mirror"] = await c.execute("blockdev-mirror", {
        "device": first["node-name"], "target": "q1", "sync": "full", "job-id": "bm"})
    out["events"] += await wait_event(c, "BLOCK_JOB_READY", "bm")
    out["jobs-ready"] = await c.execute("query-block-jobs")
    await c.execute("block-job-complete", {"device": "bm"})
    out["events"] += await wait_event(c, "BLOCK_JOB_COMPLETED", "bm")
    pivoted = await disk()
    out["pivoted"] = (pivoted["node-name"], Path(pivoted["file"]).name,
                      pivoted["backing_file_depth"])
    err["del-pivoted"] = await error_of(c, "blockdev-del", {"node-name": "q1"})
    err["backup-same"] = await error_of(c, "blockdev-backup", {
        "device": "hd0", "target": "q1", "sync": "full"})

    # an external snapshot: ov over q1
    out["snapshot"] = await c.execute("blockdev-snapshot", {"node": "q1", "overlay": "ov"})
    snap = await disk()
    out["snapshotted"] = (snap["node-name"], snap["backing_file_depth"],
                          Path(snap["backing_file"]).name)
    err["snapshot-again"] = await error_of(c, "blockdev-snapshot", {
        "node": "hd0", "overlay": "ov"})
    err["del-backing"] = await error_of(c, "blockdev-del", {"node-name": "q1"})
    err["del-overlay"] = await error_of(c, "blockdev-del", {"node-name": "ov"})

    # a backup of the disk (ov over q1) onto b1
    out["backup"] = await c.execute("blockdev-backup", {
        "device": "hd0", "target": "b1", "sync": "full", "job-id": "bk"})
    out["events"] += await wait_event(c, "BLOCK_JOB_COMPLETED", "bk")
    # stream and commit by node names: ov2 over ov over q1, stream ov into ov2
    # (base-node q1), then commit ov2 into q1 (top-node, base-node)
    await c.execute("blockdev-add", {"driver": "qcow2", "file": _file(path("ov2.qcow2")),
                                     "node-name": "ov2", "backing": None})
    await c.execute("blockdev-snapshot", {"node": "hd0", "overlay": "ov2"})
    for key, cmd, args in [
            ("stream-base-nosuch", "block-stream", {"base-node": "nosuch"}),
            ("stream-base-top", "block-stream", {"base-node": "ov2"}),
            ("stream-base-elsewhere", "block-stream", {"base-node": "r1"}),
            ("commit-top-nosuch", "block-commit", {"top-node": "nosuch"}),
            ("commit-top-elsewhere", "block-commit", {"top-node": "r1"}),
            ("commit-top-and-node", "block-commit", {"top-node": "ov", "top": "x"}),
            ("commit-base-and-node", "block-commit", {"base-node": "q1", "base": "x"}),
            ("commit-base-itself", "block-commit", {"top-node": "ov", "base-node": "ov"}),
            ("commit-base-above", "block-commit", {"top-node": "ov", "base-node": "ov2"})]:
        err[key] = await error_of(c, cmd, {"device": "hd0", **args})
    out["stream"] = await c.execute("block-stream", {"device": "hd0", "base-node": "q1",
                                                     "job-id": "sn"})
    out["events"] += await wait_event(c, "BLOCK_JOB_COMPLETED", "sn")
    streamed = await disk()
    out["streamed"] = (streamed["node-name"], streamed["backing_file_depth"])
    out["commit"] = await c.execute("block-commit", {
        "device": "hd0", "top-node": "ov2", "base-node": "q1", "job-id": "cn"})
    out["events"] += await wait_event(c, "BLOCK_JOB_READY", "cn")
    await c.execute("block-job-complete", {"device": "cn"})
    out["events"] += await wait_event(c, "BLOCK_JOB_COMPLETED", "cn")
    committed = await disk()
    out["committed"] = (committed["node-name"], committed["backing_file_depth"])
    out["nodes-end"] = await nodes()
    out["del-after-backup"] = await c.execute("blockdev-del", {"node-name": "b1"})
    out["events"] = _events(out["events"])
    for key, error in err.items():
        err[key] = {**error, "desc": error["desc"].replace(str(where), "@")
                                            .replace(first["node-name"], "#disk")}
    await c.disconnect()
    return out


def _prepare(where: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    make_chain(where, WRITES)
    for name, fmt in [("m.qcow2", "qcow2"), ("ov.qcow2", "qcow2"), ("b.qcow2", "qcow2"),
                      ("gone.qcow2", "qcow2"), ("ov2.qcow2", "qcow2"),
                      ("hbase.qcow2", "qcow2"), ("r.raw", "raw")]:
        subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(where / name),
                        str(CHAIN_SIZE)], check=True)
    for name in ("hb.qcow2", "hb2.qcow2"):
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "hbase.qcow2", "-F",
                        "qcow2", str(where / name)], check=True)


def _run(where: Path, start: Any) -> tuple[dict[str, Any], Guest]:
    _prepare(where)
    guest = start(where)
    try:
        return asyncio.run(_steps(guest.sock, where)), guest
    finally:
        stop_guest(guest)


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[dict[str, Any], dict[str, Any], Path, Path]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        mine, _ = _run(Path(a), start_vmforge_chain)
        theirs, _ = _run(Path(b), start_qemu_chain)
        yield mine, theirs, Path(a), Path(b)


def test_errors_are_qemus(runs: Any) -> None:
    mine, theirs, _a, _b = runs
    assert mine["errors"] == theirs["errors"]


def test_replies_and_node_names(runs: Any) -> None:
    mine, theirs, _a, _b = runs
    for key in ("nested-True", "nested-False", "auto-name", "add-file", "add-qcow2", "del",
                "mirror", "snapshot", "backup",
                "del-after-backup", "add-backing", "stream", "streamed", "commit", "committed",
                "pivoted", "snapshotted", "nodes-added", "nodes-end"):
        assert mine[key] == theirs[key], key
    assert mine["nodes-shape"] == theirs["nodes-shape"]
    assert shape(mine["jobs-ready"]) == shape(theirs["jobs-ready"])


def test_events(runs: Any) -> None:
    mine, theirs, _a, _b = runs
    assert mine["events"] == theirs["events"]


def test_images(runs: Any) -> None:
    _mine, _theirs, a, b = runs
    qemu_img = require_program("qemu-img", "qemu-utils")
    for name in ("m.qcow2", "ov.qcow2", "b.qcow2"):
        subprocess.run([qemu_img, "check", "-q", str(a / name)], check=True)
    # the mirror holds the chain's data, the backup the disk's (the same)
    for one, two in [("m.qcow2", "top.qcow2"), ("b.qcow2", "b.qcow2")]:
        done = subprocess.run([qemu_img, "compare", str(a / one), str(b / two)],
                              capture_output=True, text=True)
        assert done.returncode == 0, (one, two, done.stdout)

