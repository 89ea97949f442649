"""blockdev-snapshot-sync: a new qcow2 overlay made the active layer in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.block.jobkit import (
    MIB,
    Writer,
    assert_check_clean,
    backing_of,
    make_chain,
    refused,
    verify,
)
from vmforge.block import BlockBackend
from vmforge.block.jobs import JobRegistry, snapshot_sync, start_mirror

pytestmark = pytest.mark.formats("qcow2")


def test_snapshot_while_writing(tmp_path: Path) -> None:
    base, top, initial = make_chain(tmp_path)
    snap = str(tmp_path / "snap.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    with bb.drained():          # the writer held while the disk is read and snapshotted
        at_snapshot = bb.read(0, bb.size)
        snapshot_sync(bb, snap)
    w.start_more(100)
    w.stop()
    assert [la.filename for la in bb.layers] == [snap, top, base]
    assert bb.layers[1].driver.readonly and not bb.readonly
    verify(bb, w.expected(initial))
    bb.close()
    assert backing_of(snap) == top
    assert_check_clean(snap)
    assert_check_clean(top)
    with BlockBackend.open(top, "qcow2") as old:      # the old top: the disk at the snapshot
        verify(old, at_snapshot)


def test_snapshot_refusals(tmp_path: Path) -> None:
    _, top, _ = make_chain(tmp_path, size=MIB)
    missing = str(tmp_path / "nope.qcow2")
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        refused(f"Could not open '{missing}': No such file or directory",
                lambda: snapshot_sync(bb, missing, mode="existing"))
        job = start_mirror(bb, str(tmp_path / "m.qcow2"), device="hd0", speed=1,
                           registry=JobRegistry())
        refused("Node 'hd0' is busy: block device is in use by block job: mirror",
                lambda: snapshot_sync(bb, str(tmp_path / "s.qcow2"), device="hd0"))
        job.cancel()
        assert job.wait(60)
