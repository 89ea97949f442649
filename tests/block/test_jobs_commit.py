"""block-commit, intermediate and active, with a writer thread on the same
BlockBackend (as a guest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.block.jobkit import (
    Events,
    Writer,
    assert_check_clean,
    backing_of,
    make_three,
    refused,
    verify,
)
from vmforge.block import BlockBackend
from vmforge.block.jobs import JobRegistry, start_commit

pytestmark = pytest.mark.formats("qcow2")


def test_intermediate_commit_while_writing(tmp_path: Path) -> None:
    (top, mid, base), initial = make_three(tmp_path)
    with BlockBackend.open(mid, "qcow2") as m:
        mid_reads = m.read(0, m.size)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    ev = Events()
    job = start_commit(bb, device="hd0", top=mid, base=base, on_event=ev,
                       registry=JobRegistry())
    assert job.wait(60)
    w.stop()
    assert ev.statuses() == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert "error" not in ev.data("BLOCK_JOB_COMPLETED")
    assert [la.filename for la in bb.layers] == [top, base]
    assert bb.layers[1].driver.readonly
    verify(bb, w.expected(initial))
    bb.close()
    assert backing_of(top) == base
    for p in (top, base):
        assert_check_clean(p)
    with BlockBackend.open(base, "qcow2") as b:      # base now reads as mid did
        verify(b, mid_reads)
    with BlockBackend.open(top, "qcow2") as again:
        verify(again, w.expected(initial))


@pytest.mark.parametrize("top_name", [None, "top"])
def test_active_commit_while_writing(tmp_path: Path, top_name: str | None) -> None:
    (top, _mid, base), initial = make_three(tmp_path)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    ev = Events()
    job = start_commit(bb, device="hd0", top=top if top_name else None, on_event=ev,
                       registry=JobRegistry())
    assert job.type == "commit"
    assert job.wait_ready(60)
    job.complete()
    assert job.wait(60)
    w.stop()
    assert ev.statuses() == ["created", "running", "ready", "waiting", "pending",
                             "concluded", "null"]
    assert [la.filename for la in bb.layers] == [base]
    assert not bb.readonly
    verify(bb, w.expected(initial))
    bb.close()
    assert_check_clean(base)
    with BlockBackend.open(base, "qcow2") as again:
        verify(again, w.expected(initial))


def test_active_commit_cancelled_when_ready_keeps_the_chain(tmp_path: Path) -> None:
    (top, mid, base), initial = make_three(tmp_path)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    job = start_commit(bb, device="hd0", base=mid, registry=JobRegistry())
    assert job.wait_ready(60)
    job.cancel()
    assert job.wait(60)
    w.stop()
    assert [la.filename for la in bb.layers] == [top, mid, base]
    assert bb.layers[1].driver.readonly and bb.job is None and bb._hooks is None
    verify(bb, w.expected(initial))
    bb.close()
    for p in (top, mid):
        assert_check_clean(p)


def test_commit_refusals(tmp_path: Path) -> None:
    (top, mid, base), _ = make_three(tmp_path)
    reg = JobRegistry()
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        refused("Top image file nope.qcow2 not found",
                lambda: start_commit(bb, device="hd0", top="nope.qcow2", registry=reg))
        refused("Can't find 'nope.qcow2' in the backing chain",
                lambda: start_commit(bb, device="hd0", base="nope.qcow2", registry=reg))
        refused("Can't find '" + top + "' in the backing chain",
                lambda: start_commit(bb, device="hd0", top=mid, base=top, registry=reg))
        refused("Can't find '" + mid + "' in the backing chain",   # (searched below top)
                lambda: start_commit(bb, device="hd0", top=mid, base=mid, registry=reg))
    with BlockBackend.open(base, "qcow2", readonly=False) as bb:
        refused("cannot commit an image into itself",
                lambda: start_commit(bb, device="hd0", registry=reg))
