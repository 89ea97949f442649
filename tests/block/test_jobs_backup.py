"""drive-backup with a writer thread on the same BlockBackend (as a guest): the
target equals the disk at the job's start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.block.jobkit import (
    BLOCK,
    Events,
    Writer,
    assert_check_clean,
    make_chain,
    refused,
    verify,
)
from vmforge.block import BlockBackend
from vmforge.block.jobs import BlockJob, JobRegistry, start_backup

pytestmark = pytest.mark.formats("qcow2", "raw")


class AtStart(Events):
    """Records the disk as it reads when the job is created (the backend is drained
    then: no write lands between this read and the job's point in time)."""

    def __init__(self, bb: BlockBackend) -> None:
        super().__init__()
        self.bb = bb
        self.contents = b""

    def __call__(self, job: BlockJob, event: str, data: dict[str, Any]) -> None:
        if event == "JOB_STATUS_CHANGE" and data["status"] == "created":
            self.contents = self.bb.read(0, self.bb.size)
        super().__call__(job, event, data)


@pytest.mark.parametrize(("sync", "fmt"), [("full", "qcow2"), ("top", "qcow2"),
                                           ("full", "raw")])
def test_backup_is_the_disk_at_the_start(tmp_path: Path, sync: str, fmt: str) -> None:
    base, top, initial = make_chain(tmp_path)
    target = str(tmp_path / f"backup.{fmt}")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    ev = AtStart(bb)
    job = start_backup(bb, target, device="hd0", sync=sync, format=fmt, speed=64 << 20,
                       on_event=ev, registry=JobRegistry())
    assert job.wait(60)
    w.stop()
    assert ev.statuses() == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert "error" not in ev.data("BLOCK_JOB_COMPLETED")
    assert ev.contents != initial            # the writer had written before the start
    assert [la.filename for la in bb.layers] == [top, base]
    verify(bb, w.expected(initial))
    bb.close()
    with BlockBackend.open(target, fmt) as t:
        assert [la.filename for la in t.layers] == ([target, base] if sync == "top"
                                                    else [target])
        verify(t, ev.contents)
    if fmt == "qcow2":
        assert_check_clean(target)


def test_backup_sync_none_keeps_what_the_guest_overwrote(tmp_path: Path) -> None:
    _, top, initial = make_chain(tmp_path)
    target = str(tmp_path / "fleece.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = AtStart(bb)
    job = start_backup(bb, target, device="hd0", sync="none", on_event=ev,
                       registry=JobRegistry())
    w = Writer(bb).start(at_least=300)
    w.stop()
    job.cancel()
    assert job.wait(60)
    assert "BLOCK_JOB_CANCELLED" in ev.names()
    verify(bb, w.expected(initial))
    bb.close()
    assert_check_clean(target)
    with BlockBackend.open(target, "qcow2", backing=False) as t:
        held = [e for e in t.block_status() if e.is_allocated]
        assert sum(e.length for e in held) >= len(w.model) * BLOCK // 16
        for e in held:                       # what it holds: the old data
            assert t.read(e.offset, e.length) == ev.contents[e.offset:e.end]
    with BlockBackend.open(target, "qcow2") as t:     # over the source as it is now:
        for blk in w.model:                  # each block the guest wrote reads as before
            at = blk * BLOCK                 # (zeros too: a zero range is written)
            assert t.read(at, BLOCK) == ev.contents[at:at + BLOCK], blk


def test_backup_refusals(tmp_path: Path) -> None:
    _, top, _ = make_chain(tmp_path, size=1 << 20)
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        refused("Unknown file format 'nope'",
                lambda: start_backup(bb, str(tmp_path / "b"), device="hd0", format="nope",
                                     registry=JobRegistry()))
        refused("Parameter 'sync' does not accept value 'some'",
                lambda: start_backup(bb, str(tmp_path / "b"), device="hd0", sync="some",
                                     registry=JobRegistry()))


def test_backup_into_an_existing_image_overwrites_all(tmp_path: Path) -> None:
    """mode=existing: the target's old data is no part of the backup (zeros written)."""
    from vmforge.block import create_image

    _, top, initial = make_chain(tmp_path, size=4 << 20)
    target = str(tmp_path / "old.qcow2")
    create_image("qcow2", target, 4 << 20)
    with BlockBackend.open(target, "qcow2", readonly=False) as t:
        t.write(0, b"\xee" * (4 << 20))
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = AtStart(bb)
    job = start_backup(bb, target, device="hd0", mode="existing", format="qcow2",
                       on_event=ev, registry=JobRegistry())
    assert job.wait(60)
    assert ev.data("BLOCK_JOB_COMPLETED")["len"] == 4 << 20    # the disk, as QEMU's
    bb.close()
    with BlockBackend.open(target, "qcow2") as t:
        verify(t, initial)


def test_a_failed_copy_before_write_fails_the_write_and_the_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    _, top, initial = make_chain(tmp_path, size=1 << 20)
    target = str(tmp_path / "fleece.qcow2")
    real = BlockBackend.pwritev

    def full(self: BlockBackend, offset: int, buffers: list[memoryview]) -> None:
        if self.filename == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, offset, buffers)

    monkeypatch.setattr(BlockBackend, "pwritev", full)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    job = start_backup(bb, target, device="hd0", sync="none", on_event=ev,
                       registry=JobRegistry())
    with pytest.raises(OSError) as exc:             # the guest's write fails (EIO to it)
        bb.write(0, b"new" * 100)
    assert exc.value.errno == errno.ENOSPC
    assert job.wait(60)
    assert ev.data("BLOCK_JOB_ERROR") == {"device": "hd0", "operation": "write",
                                          "action": "report"}
    assert ev.data("BLOCK_JOB_COMPLETED")["error"] == "No space left on device"
    bb.write(0, b"new")                             # the job gone: writes go through
    expected = bytearray(initial)
    expected[0:3] = b"new"
    verify(bb, bytes(expected))
    bb.close()
