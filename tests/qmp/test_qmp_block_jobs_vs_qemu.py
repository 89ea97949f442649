"""Block jobs over QMP, the same script against vmforge and QEMU 7.2
(``qemu-system-riscv64 -M virt -S`` with a qcow2 chain on a virtio-blk disk),
through ``qemu.qmp``: an external snapshot, intermediate commit, stream, active
commit, mirror (cancelled when ready: no pivot; completed: pivot), backup,
pause/resume/speed, the refusals of each state and of bad arguments, and the
events each step sends.  Replies and events must have QEMU's keys and types,
the same job statuses and types, the same errors (class and text), and leave
the disk on the same chain."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockjobkit import (
    make_chain,
    start_qemu_chain,
    start_vmforge_chain,
    wait_event,
)
from qmpkit import Guest, connect, error_of, shape, stop_guest

#: data written into the chain before the machine starts: (layer, offset, length, byte)
WRITES = [("base", 0, 4 << 20, 0x11), ("top", 1 << 20, 1 << 20, 0x22)]


async def _steps(sock: Path, where: Path) -> dict[str, Any]:
    c = await connect(sock)
    out: dict[str, Any] = {"events": []}
    events: list[dict[str, Any]] = out["events"]

    def path(name: str) -> str:
        return str(where / name)

    async def chain() -> list[str]:
        (disk, *_) = [d for d in await c.execute("query-block") if d["device"] == "hd0"]
        image, names = disk["inserted"]["image"], []
        while image is not None:
            names.append(Path(image["filename"]).name)
            image = image.get("backing-image")
        return names

    err: dict[str, Any] = {}
    out["errors"] = err
    err["mirror-nodev"] = await error_of(c, "drive-mirror", {
        "device": "nosuch", "target": path("x.qcow2"), "sync": "full"})
    err["mirror-nosync"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2")})
    err["mirror-badsync"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2"), "sync": "bogus"})
    err["mirror-badformat"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2"), "sync": "full", "format": "bogus"})
    err["mirror-granularity"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2"), "sync": "full", "granularity": 1000})
    err["mirror-existing"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("absent.qcow2"), "sync": "full", "mode": "existing"})
    err["mirror-bad-id"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2"), "sync": "full", "job-id": "1bad"})
    err["stream-bad-id"] = await error_of(c, "block-stream", {
        "device": "hd0", "job-id": "a b"})
    err["commit-nodev"] = await error_of(c, "block-commit", {"device": "nosuch"})
    err["stream-nodev"] = await error_of(c, "block-stream", {"device": "nosuch"})
    err["backup-nodev"] = await error_of(c, "drive-backup", {
        "device": "nosuch", "target": path("x.qcow2"), "sync": "full"})
    err["snapshot-nodev"] = await error_of(c, "blockdev-snapshot-sync", {
        "device": "nosuch", "snapshot-file": path("x.qcow2")})
    err["snapshot-none"] = await error_of(c, "blockdev-snapshot-sync", {
        "snapshot-file": path("x.qcow2")})
    err["stream-base-notinchain"] = await error_of(c, "block-stream", {
        "device": "hd0", "base": path("nonexist.qcow2")})
    err["stream-base-and-node"] = await error_of(c, "block-stream", {
        "device": "hd0", "base": "x", "base-node": "y"})
    err["commit-top-itself"] = await error_of(c, "block-commit", {
        "device": "hd0", "top": path("top.qcow2"), "base": path("top.qcow2")})
    for verb, args in [("block-job-cancel", {"device": "nosuch"}),
                       ("block-job-pause", {"device": "nosuch"}),
                       ("block-job-resume", {"device": "nosuch"}),
                       ("block-job-complete", {"device": "nosuch"}),
                       ("block-job-set-speed", {"device": "nosuch", "speed": 1}),
                       ("block-job-finalize", {"id": "nosuch"}),
                       ("block-job-dismiss", {"id": "nosuch"}),
                       ("job-pause", {"id": "nosuch"}), ("job-cancel", {"id": "nosuch"})]:
        err[f"{verb}-nosuch"] = await error_of(c, verb, args)
    out["jobs-idle"] = await c.execute("query-block-jobs")
    out["hmp-idle"] = await c.execute("human-monitor-command",
                                      {"command-line": "info block-jobs"})

    # an external snapshot: s1 on top of top.qcow2
    out["snapshot"] = await c.execute("blockdev-snapshot-sync", {
        "device": "hd0", "snapshot-file": path("s1.qcow2"), "format": "qcow2"})
    err["snapshot-same"] = await error_of(c, "blockdev-snapshot-sync", {
        "device": "hd0", "snapshot-file": path("s1.qcow2")})
    out["chain-snapshot"] = await chain()
    out["query-block-snapshot"] = [d for d in await c.execute("query-block")
                                   if d["device"] == "hd0"]

    # intermediate commit: top into base
    out["commit"] = await c.execute("block-commit", {
        "device": "hd0", "top": path("top.qcow2"), "job-id": "c1"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "c1")
    out["chain-commit"] = await chain()

    # stream: base into s2 (a second snapshot, so that base stays below it)
    await c.execute("blockdev-snapshot-sync", {
        "device": "hd0", "snapshot-file": path("s2.qcow2"), "format": "qcow2"})
    out["stream"] = await c.execute("block-stream", {
        "device": "hd0", "base": path("base.qcow2"), "job-id": "st"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "st")
    out["chain-stream"] = await chain()

    # active commit: READY, then complete: base is the disk again
    await c.execute("block-commit", {"device": "hd0"})
    events += await wait_event(c, "BLOCK_JOB_READY", "hd0")
    out["jobs-commit-ready"] = await c.execute("query-block-jobs")
    await c.execute("block-job-complete", {"device": "hd0"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "hd0")
    out["chain-active-commit"] = await chain()
    err["commit-single-image"] = await error_of(c, "block-commit", {"device": "hd0"})

    # a mirror held back by its speed: the refusals of a running job
    out["mirror"] = await c.execute("drive-mirror", {
        "device": "hd0", "target": path("m1.qcow2"), "sync": "full", "format": "qcow2",
        "speed": 1, "job-id": "m1"})
    out["jobs-running"] = await c.execute("query-block-jobs")
    out["query-jobs"] = await c.execute("query-jobs")
    err["complete-running"] = await error_of(c, "block-job-complete", {"device": "m1"})
    err["dismiss-running"] = await error_of(c, "block-job-dismiss", {"id": "m1"})
    err["finalize-running"] = await error_of(c, "block-job-finalize", {"id": "m1"})
    err["job-complete-running"] = await error_of(c, "job-complete", {"id": "m1"})
    err["mirror-again"] = await error_of(c, "drive-mirror", {
        "device": "hd0", "target": path("x.qcow2"), "sync": "full"})
    err["stream-busy"] = await error_of(c, "block-stream", {"device": "hd0"})
    err["speed-negative"] = await error_of(c, "block-job-set-speed", {
        "device": "m1", "speed": -1})
    await c.execute("block-job-pause", {"device": "m1"})
    events += await wait_event(c, "JOB_STATUS_CHANGE", "m1", status="paused")
    out["jobs-paused"] = await c.execute("query-block-jobs")
    out["hmp-paused"] = await c.execute("human-monitor-command",
                                        {"command-line": "info block-jobs"})
    err["pause-again"] = await error_of(c, "block-job-pause", {"device": "m1"})
    await c.execute("block-job-resume", {"device": "m1"})
    err["resume-again"] = await error_of(c, "block-job-resume", {"device": "m1"})
    await c.execute("block-job-set-speed", {"device": "m1", "speed": 0})
    events += await wait_event(c, "BLOCK_JOB_READY", "m1")
    out["jobs-ready"] = await c.execute("query-block-jobs")
    # cancelled once ready: COMPLETED, the disk stays where it was
    await c.execute("block-job-cancel", {"device": "m1"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "m1")
    out["chain-mirror-cancelled"] = await chain()

    # a mirror completed: the disk is the copy
    await c.execute("drive-mirror", {"device": "hd0", "target": path("m2.qcow2"),
                                     "sync": "full", "format": "qcow2"})
    events += await wait_event(c, "BLOCK_JOB_READY", "hd0")
    await c.execute("block-job-complete", {"device": "hd0"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "hd0")
    out["chain-mirror"] = await chain()

    # a backup cancelled while it runs, then one that completes
    await c.execute("drive-backup", {"device": "hd0", "target": path("b1.qcow2"),
                                     "sync": "full", "format": "qcow2", "speed": 1,
                                     "job-id": "b1"})
    err["complete-backup"] = await error_of(c, "block-job-complete", {"device": "b1"})
    await c.execute("block-job-cancel", {"device": "b1", "force": True})
    events += await wait_event(c, "BLOCK_JOB_CANCELLED", "b1")
    await c.execute("drive-backup", {"device": "hd0", "target": path("b2.qcow2"),
                                     "sync": "full", "format": "qcow2"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "hd0")
    # manual finalize and dismiss
    await c.execute("drive-backup", {"device": "hd0", "target": path("b3.qcow2"),
                                     "sync": "full", "format": "qcow2", "job-id": "b3",
                                     "auto-finalize": False, "auto-dismiss": False})
    events += await wait_event(c, "BLOCK_JOB_PENDING", "b3")
    out["jobs-pending"] = await c.execute("query-block-jobs")
    err["dismiss-pending"] = await error_of(c, "block-job-dismiss", {"id": "b3"})
    await c.execute("block-job-finalize", {"id": "b3"})
    events += await wait_event(c, "JOB_STATUS_CHANGE", "b3", status="concluded")
    out["jobs-concluded"] = await c.execute("query-block-jobs")
    err["cancel-concluded"] = await error_of(c, "block-job-cancel", {"device": "b3"})
    await c.execute("block-job-dismiss", {"id": "b3"})
    events += await wait_event(c, "JOB_STATUS_CHANGE", "b3", status="null")

    # a paused job is cancelled only by force; job-cancel is a forced cancel: a ready
    # mirror ends CANCELLED (no pivot)
    await c.execute("drive-mirror", {"device": "hd0", "target": path("m3.qcow2"),
                                     "sync": "full", "format": "qcow2", "job-id": "m3"})
    events += await wait_event(c, "BLOCK_JOB_READY", "m3")
    await c.execute("job-pause", {"id": "m3"})
    err["cancel-paused"] = await error_of(c, "block-job-cancel", {"device": "m3"})
    await c.execute("job-resume", {"id": "m3"})
    await c.execute("job-cancel", {"id": "m3"})
    events += await wait_event(c, "BLOCK_JOB_CANCELLED", "m3")
    out["chain-m3-cancelled"] = await chain()
    out["jobs-end"] = await c.execute("query-block-jobs")
    out["chain-end"] = await chain()
    await c.disconnect()
    return out


async def _complete_on_standby(sock: Path, where: Path) -> list[tuple[str, Any]]:
    """A ready mirror paused (standby) takes block-job-complete and pivots once
    resumed (QEMU 7.2's verb table: complete in ready and standby)."""
    c = await connect(sock)
    await c.execute("drive-mirror", {"device": "hd0", "target": str(where / "m4.qcow2"),
                                     "sync": "full", "format": "qcow2", "job-id": "m4"})
    events = await wait_event(c, "BLOCK_JOB_READY", "m4")
    await c.execute("block-job-pause", {"device": "m4"})
    events += await wait_event(c, "JOB_STATUS_CHANGE", "m4", status="standby")
    await c.execute("block-job-complete", {"device": "m4"})
    await c.execute("block-job-resume", {"device": "m4"})
    events += await wait_event(c, "BLOCK_JOB_COMPLETED", "m4")
    await c.disconnect()
    return _job_events(events)


def _conversation(start: Any, steps: Any = _steps) -> tuple[Any, Path]:
    where = Path(tempfile.mkdtemp(prefix="vmf-bj-"))
    make_chain(where, WRITES)
    guest: Guest = start(where)
    try:
        return asyncio.run(steps(guest.sock, where)), where
    finally:
        stop_guest(guest)


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[dict[str, Any], dict[str, Any], Path, Path]]:
    import shutil

    qemu, qdir = _conversation(start_qemu_chain)
    mine, vdir = _conversation(start_vmforge_chain)
    yield mine, qemu, vdir, qdir
    shutil.rmtree(qdir, ignore_errors=True)
    shutil.rmtree(vdir, ignore_errors=True)


def test_errors_match_qemu(both: tuple[dict[str, Any], ...]) -> None:
    mine, qemu = both[0]["errors"], both[1]["errors"]
    assert mine.keys() == qemu.keys()
    diff = {k: (mine[k], qemu[k]) for k in qemu
            if mine[k] != {**qemu[k], "desc": qemu[k]["desc"].replace(str(both[3]),
                                                                      str(both[2]))}}
    assert diff == {}


@pytest.mark.parametrize("key", ["jobs-running", "jobs-paused", "jobs-ready",
                                 "jobs-commit-ready", "query-jobs", "jobs-pending",
                                 "jobs-concluded"])
def test_job_lists_match_qemu(both: tuple[dict[str, Any], ...], key: str) -> None:
    mine, qemu = both[0][key], both[1][key]
    assert len(mine) == len(qemu) == 1
    assert shape(mine) == shape(qemu)
    # the values that do not depend on how far the copy got (nor on whether the job's
    # thread is between two copies at that moment: busy)
    same = ("type", "device", "id", "status", "paused", "ready", "speed", "error",
            "io-status", "auto-finalize", "auto-dismiss")
    assert {k: v for k, v in mine[0].items() if k in same} == \
        {k: v for k, v in qemu[0].items() if k in same}


def test_replies_and_chains_match_qemu(both: tuple[dict[str, Any], ...]) -> None:
    mine, qemu = both[0], both[1]
    for key in qemu:
        if key.startswith("chain-") or key in ("snapshot", "commit", "stream", "mirror",
                                               "jobs-idle", "jobs-end"):
            assert mine[key] == qemu[key], key


def test_info_block_jobs_matches_qemu(both: tuple[dict[str, Any], ...]) -> None:
    mine, qemu = both[0], both[1]
    assert mine["hmp-idle"] == qemu["hmp-idle"] == "No active jobs\r\n"

    def progress_left_out(text: str) -> str:
        return re.sub(r"Completed \d+ of \d+", "Completed X of Y", text)

    assert progress_left_out(mine["hmp-paused"]) == progress_left_out(qemu["hmp-paused"])
    assert qemu["hmp-paused"].startswith("Type mirror, device m1: Completed ")


def test_query_block_of_a_chain_matches_qemu(both: tuple[dict[str, Any], ...]) -> None:
    """After the snapshot: three images, each naming its backing file as recorded
    and as opened.  (qcow2's own details, cluster-size and format-specific, are
    query-block's matter, not the jobs'.)"""
    import test_qmp_vs_qemu

    mine, qemu = both[0]["query-block-snapshot"], both[1]["query-block-snapshot"]
    assert test_qmp_vs_qemu._compare(
        shape(mine), shape(qemu), {"cluster-size", "format-specific", "parent"},
        "query-block") == []

    def names(value: Any, where: Path) -> Any:
        image = value[0]["inserted"]["image"]
        out = []
        while image is not None:
            out.append({k: str(v).replace(str(where), "D") for k, v in image.items()
                        if "backing-filename" in k or k == "filename"})
            image = image.get("backing-image")
        return out

    assert names(mine, both[2]) == names(qemu, both[3])


def _job_events(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Events without their timestamps and progress figures; QEMU's drained
    sections (a ``paused`` at once followed by ``running`` that no one asked for)
    left out, as they tell how QEMU's block layer drains, not the job."""
    out: list[tuple[str, Any]] = []
    for e in events:
        data = {k: v for k, v in e.get("data", {}).items() if k not in ("len", "offset")}
        out.append((e["event"], data))
    cleaned: list[tuple[str, Any]] = []
    for item in out:
        if cleaned and item[0] == "JOB_STATUS_CHANGE" and item[1]["status"] == "running" \
                and cleaned[-1][0] == "JOB_STATUS_CHANGE" \
                and cleaned[-1][1]["status"] == "paused" \
                and cleaned[-1][1]["id"] == item[1]["id"] and item[1]["id"] != "m1":
            cleaned.pop()
            continue
        cleaned.append(item)
    return cleaned


def test_events_match_qemu(both: tuple[dict[str, Any], ...]) -> None:
    mine, qemu = both[0]["events"], both[1]["events"]
    assert [shape(e) for e in mine if e["event"] != "JOB_STATUS_CHANGE"] == \
        [shape(e) for e in qemu if e["event"] != "JOB_STATUS_CHANGE"]
    assert _job_events(mine) == _job_events(qemu)


def test_images_are_clean_and_equal(both: tuple[dict[str, Any], ...]) -> None:
    vdir, qdir = both[2], both[3]
    for name in ("base.qcow2", "m2.qcow2", "b2.qcow2"):
        check = subprocess.run(["qemu-img", "check", "--output=json", str(vdir / name)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout).get("corruptions", 0) == 0
        same = subprocess.run(["qemu-img", "compare", str(vdir / name), str(qdir / name)],
                              capture_output=True, text=True, check=False)
        assert same.returncode == 0, (name, same.stdout)


def test_complete_on_standby_matches_qemu() -> None:
    import shutil

    qemu, qdir = _conversation(start_qemu_chain, _complete_on_standby)
    shutil.rmtree(qdir, ignore_errors=True)
    assert ("BLOCK_JOB_COMPLETED", {"type": "mirror", "device": "m4", "speed": 0}) in qemu
    mine, vdir = _conversation(start_vmforge_chain, _complete_on_standby)
    shutil.rmtree(vdir, ignore_errors=True)
    assert mine == qemu
