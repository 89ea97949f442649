"""block-stream with a writer thread on the same BlockBackend (as a guest)."""

from __future__ import annotations

import threading
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
from vmforge.block.jobs import JobRegistry, start_stream

pytestmark = pytest.mark.formats("qcow2")


@pytest.mark.parametrize("to_base", [False, True])
def test_stream_while_writing(tmp_path: Path, to_base: bool) -> None:
    (top, _mid, base), initial = make_three(tmp_path)
    reg = JobRegistry()
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    ev = Events()
    job = start_stream(bb, device="hd0", base=base if to_base else None, on_event=ev,
                       registry=reg)
    assert job.wait(60)
    w.stop()
    assert ev.statuses() == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert "error" not in ev.data("BLOCK_JOB_COMPLETED")
    assert [la.filename for la in bb.layers] == ([top, base] if to_base else [top])
    verify(bb, w.expected(initial))
    bb.close()
    assert backing_of(top) == (base if to_base else None)
    assert_check_clean(top)
    with BlockBackend.open(top, "qcow2") as again:
        verify(again, w.expected(initial))


def test_stream_refuses_an_unknown_base(tmp_path: Path) -> None:
    (top, _, _), _ = make_three(tmp_path)
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        refused("Can't find 'nope.qcow2' in the backing chain",
                lambda: start_stream(bb, device="hd0", base="nope.qcow2",
                                     registry=JobRegistry()))


def test_a_guest_write_racing_the_copy_of_its_range_wins(tmp_path: Path) -> None:
    """The job reads a range from the backing files; a guest write to it arrives
    before the job writes the range into the top: the guest's data must stay."""
    (top, _, _), initial = make_three(tmp_path)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    real_preadv = bb.preadv
    racers: list[threading.Thread] = []
    hit: list[int] = []

    def preadv(offset: int, buffers: list[memoryview]) -> None:
        real_preadv(offset, buffers)
        if threading.current_thread().name.startswith("job-") and not hit:
            hit.append(offset)
            t = threading.Thread(target=bb.write, args=(offset, b"G" * 4096))
            t.start()
            t.join(0.5)        # (held by the serialised range: the copy goes first)
            racers.append(t)

    bb.preadv = preadv  # type: ignore[method-assign]
    job = start_stream(bb, device="hd0", registry=JobRegistry())
    assert job.wait(60)
    racers[0].join(10)
    assert len(bb.layers) == 1
    expected = bytearray(initial)
    expected[hit[0]:hit[0] + 4096] = b"G" * 4096
    verify(bb, bytes(expected))
    bb.close()


@pytest.mark.formats("raw")
def test_stream_of_a_disk_without_backing_file_completes(tmp_path: Path) -> None:
    from vmforge.block import create_image

    path = str(tmp_path / "d.raw")
    create_image("raw", path, 1 << 20)
    with BlockBackend.open(path, "raw", readonly=False) as bb:
        ev = Events()
        job = start_stream(bb, device="hd0", on_event=ev, registry=JobRegistry())
        assert job.wait(60)
        assert "error" not in ev.data("BLOCK_JOB_COMPLETED")
