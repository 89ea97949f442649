"""drive-mirror with a writer thread on the same BlockBackend (as a guest): READY,
pivot in place, cancel before and after READY, the job's state machine."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.block.jobkit import (
    MIB,
    Events,
    Writer,
    assert_check_clean,
    assert_same,
    make_chain,
    refused,
    verify,
)
from vmforge.block import BlockBackend
from vmforge.block.jobs import JobRegistry, start_mirror

pytestmark = pytest.mark.formats("qcow2", "raw")


@pytest.fixture
def reg() -> JobRegistry:
    return JobRegistry()


@pytest.mark.parametrize("sync", ["full", "top", "none"])
def test_mirror_and_pivot_while_writing(tmp_path: Path, reg: JobRegistry, sync: str) -> None:
    base, top, initial = make_chain(tmp_path)
    target = str(tmp_path / "copy.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    ev = Events()
    job = start_mirror(bb, target, device="hd0", sync=sync, on_event=ev, registry=reg)
    assert reg.find("hd0") is job
    assert job.wait_ready(60)
    ev.wait_for(lambda: "BLOCK_JOB_READY" in ev.names())
    job.complete()                             # the writer still writing: through the pivot
    assert job.wait(60)
    w.stop()
    assert bb.filename == target               # the same object, on the copy now
    expected_chain = {"full": [target], "top": [target, base],
                      "none": [target, top, base]}[sync]
    assert [la.filename for la in bb.layers] == expected_chain
    verify(bb, w.expected(initial))
    bb.close()
    assert_check_clean(target)
    with BlockBackend.open(target, "qcow2") as again:     # "reboot" on the copy
        verify(again, w.expected(initial))
    assert ev.statuses() == ["created", "running", "ready", "waiting", "pending",
                             "concluded", "null"]
    assert "BLOCK_JOB_PENDING" not in ev.names()      # (auto-finalize: QEMU sends none)
    done = ev.data("BLOCK_JOB_COMPLETED")
    assert done == {"type": "mirror", "device": "hd0", "len": done["len"],
                    "offset": done["len"], "speed": 0}
    assert reg.get("hd0") is None


def test_writer_stopped_before_complete_target_equals_source(tmp_path: Path,
                                                             reg: JobRegistry) -> None:
    _, top, _ = make_chain(tmp_path)
    target = str(tmp_path / "copy.raw")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    job = start_mirror(bb, target, device="hd0", format="raw", granularity=4096,
                       registry=reg)
    assert job.wait_ready(60)
    w.stop()
    job.complete()
    assert job.wait(60)
    bb.close()
    assert_same(top, target)


def test_cancel_before_ready_leaves_the_source(tmp_path: Path, reg: JobRegistry) -> None:
    _, top, initial = make_chain(tmp_path)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    chain = [la.filename for la in bb.layers]
    ev = Events()
    w = Writer(bb).start()
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", speed=MIB,
                       on_event=ev, registry=reg)
    assert job.info()["status"] == "running"       # at once, as QEMU's job_start
    refused("Job 'hd0' in state 'running' cannot accept command verb 'complete'",
            lambda: job.complete())
    job.cancel()
    assert job.wait(60)
    w.stop()
    assert [la.filename for la in bb.layers] == chain
    verify(bb, w.expected(initial))
    assert "BLOCK_JOB_CANCELLED" in ev.names() and "BLOCK_JOB_COMPLETED" not in ev.names()
    assert ev.statuses() == ["created", "running", "aborting", "concluded", "null"]
    assert bb._hooks is None and bb.job is None
    bb.close()
    assert_check_clean(top)


def test_cancel_when_ready_completes_without_pivot(tmp_path: Path, reg: JobRegistry) -> None:
    _, top, initial = make_chain(tmp_path)
    target = str(tmp_path / "copy.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    w = Writer(bb).start()
    job = start_mirror(bb, target, device="hd0", on_event=ev, registry=reg)
    assert job.wait_ready(60)
    w.stop()
    job.cancel()
    assert job.wait(60)
    assert bb.filename == top
    assert "BLOCK_JOB_COMPLETED" in ev.names() and "BLOCK_JOB_CANCELLED" not in ev.names()
    assert "error" not in ev.data("BLOCK_JOB_COMPLETED")
    verify(bb, w.expected(initial))
    bb.close()
    assert_same(top, target)
    assert_check_clean(target)


def test_pause_resume_speed_and_info(tmp_path: Path, reg: JobRegistry) -> None:
    _, top, _ = make_chain(tmp_path)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", job_id="m0",
                       speed=512 * 1024, on_event=ev, registry=reg,
                       auto_dismiss=False)
    ev.wait_status("running")
    info = job.info()
    assert list(info) == ["type", "device", "len", "offset", "busy", "paused", "speed",
                          "io-status", "ready", "status", "auto-finalize", "auto-dismiss"]
    assert info["device"] == "m0" and info["speed"] == 512 * 1024
    assert info["len"] > 0 and not info["ready"]
    refused("Can't resume a job that was not paused",
            lambda: job.resume())
    job.pause()          # as QEMU's: the job has paused when the call returns
    assert job.info()["paused"] is True
    assert job.info()["status"] == "paused" and job.info()["busy"] is False
    refused("Job is already paused",
            lambda: job.pause())
    refused("The block job for device 'm0' is currently paused",
            lambda: job.cancel())
    job.set_speed(0)
    assert job.info()["speed"] == 0
    refused("Invalid parameter 'speed'",
            lambda: job.set_speed(-1))
    job.resume()
    assert job.status in ("running", "ready")
    assert job.wait_ready(60)
    assert ev.statuses()[:5] == ["created", "running", "paused", "running", "ready"]
    job.cancel(force=True)
    assert job.wait(60)
    assert job.status == "concluded"
    assert job.info()["error"] == "Operation canceled"
    assert reg.find("m0") is job
    job.dismiss()
    assert job.status == "null" and reg.get("m0") is None
    refused("Block job 'm0' not found",
            lambda: reg.find("m0"))
    bb.close()


def test_manual_finalize(tmp_path: Path, reg: JobRegistry) -> None:
    _, top, _ = make_chain(tmp_path, size=4 * MIB)
    target = str(tmp_path / "copy.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    job = start_mirror(bb, target, device="hd0", on_event=ev, registry=reg,
                       auto_finalize=False)
    assert job.wait_ready(60)
    job.complete()
    ev.wait_status("pending")
    assert bb.filename == top and ev.data("BLOCK_JOB_PENDING") == {"type": "mirror",
                                                                     "id": "hd0"}
    job.finalize()
    assert job.wait(60)
    assert bb.filename == target
    bb.close()


def test_refusals(tmp_path: Path, reg: JobRegistry) -> None:
    base, top, _ = make_chain(tmp_path, size=4 * MIB)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    for image in (top, base):       # an image of the chain: QEMU's locks refuse it
        for mode in ("absolute-paths", "existing"):
            refused('Failed to get "write" lock',
                    lambda i=image, m=mode: start_mirror(bb, i, device="hd0", mode=m,
                                                         registry=reg))
    with BlockBackend.open(base, "qcow2", force_share=True) as b:
        assert b.read(0, 4096) != bytes(4096)             # (not overwritten)
    t = str(tmp_path / "t.qcow2")
    refused("Parameter 'granularity' expects a power of 2",
            lambda: start_mirror(bb, t, device="hd0", granularity=3 * 4096, registry=reg))
    refused("Parameter 'granularity' expects a value in range [512B, 64MB]",
            lambda: start_mirror(bb, t, device="hd0", granularity=256, registry=reg))
    missing = str(tmp_path / "nope.qcow2")
    refused(f"Could not open '{missing}': No such file or directory",
            lambda: start_mirror(bb, missing, device="hd0", mode="existing", registry=reg))
    refused("Invalid job ID '1x'",
            lambda: start_mirror(bb, t, device="hd0", job_id="1x", registry=reg))
    job = start_mirror(bb, t, device="hd0", speed=1, registry=reg)
    refused("Node 'hd0' is busy: block device is in use by block job: mirror",
            lambda: start_mirror(bb, str(tmp_path / "u.qcow2"), device="hd0", registry=reg))
    job.cancel()
    assert job.wait(60)
    bb.close()


def test_an_io_error_ends_the_job_and_keeps_the_source(tmp_path: Path, reg: JobRegistry,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    _, top, initial = make_chain(tmp_path, size=4 * MIB)
    calls: list[int] = []

    def full(self: BlockBackend, offset: int, buffers: list[memoryview]) -> None:
        if self.filename.endswith("copy.qcow2"):
            calls.append(offset)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, offset, buffers)

    real = BlockBackend.pwritev
    monkeypatch.setattr(BlockBackend, "pwritev", full)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", on_event=ev,
                       registry=reg, buf_size=65536, auto_dismiss=False)
    assert job.wait(60)
    assert ev.statuses() == ["created", "running", "aborting", "concluded"]
    assert ev.data("BLOCK_JOB_ERROR") == {"device": "hd0", "operation": "write",
                                          "action": "report"}
    assert ev.names().index("BLOCK_JOB_ERROR") < ev.names().index("BLOCK_JOB_COMPLETED")
    done = ev.data("BLOCK_JOB_COMPLETED")
    assert done["error"] == "No space left on device"
    assert job.info()["error"] == "No space left on device"
    assert job.info()["io-status"] == "ok"       # (only on-error=stop sets it)
    assert bb.filename == top and bb._hooks is None
    verify(bb, initial)
    bb.close()


def test_an_existing_file_is_created_over(tmp_path: Path, reg: JobRegistry) -> None:
    """mode=absolute-paths makes a new image where a file is (bdrv_img_create)."""
    _, top, initial = make_chain(tmp_path, size=4 * MIB)
    target = tmp_path / "old.qcow2"
    target.write_bytes(b"junk" * 5000)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    job = start_mirror(bb, str(target), device="hd0", registry=reg)
    assert job.wait_ready(60)
    job.complete()
    assert job.wait(60)
    verify(bb, initial)
    bb.close()
    assert_check_clean(str(target))


@pytest.mark.parametrize("fmt", ["vmdk", "vpc", "vdi", "vhdx", "qed", "qcow", "parallels"])
def test_mirror_into_other_formats(tmp_path: Path, reg: JobRegistry, fmt: str) -> None:
    """Any format plugin that creates images takes a mirror (qemu-img reads it alike)."""
    from vmforge.block.probe import format_names

    if fmt not in format_names():
        pytest.skip(f"format plugin {fmt} not installed")
    _, top, initial = make_chain(tmp_path, size=4 * MIB)
    target = str(tmp_path / f"copy.{fmt}")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb).start()
    job = start_mirror(bb, target, device="hd0", format=fmt, registry=reg)
    assert job.wait_ready(60)
    w.stop()
    before = bb.read(0, bb.size)
    job.complete()
    assert job.wait(60) and job.error is None
    assert bb.format == fmt
    verify(bb, w.expected(initial))
    bb.close()
    assert_same(top, target)
    with BlockBackend.open(target, fmt) as again:
        verify(again, before)


def test_a_format_that_cannot_create_is_refused(tmp_path: Path, reg: JobRegistry) -> None:
    from vmforge.block.probe import format_names

    if "bochs" not in format_names():
        pytest.skip("format plugin bochs not installed")
    _, top, _ = make_chain(tmp_path, size=MIB)
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        refused("Format driver 'bochs' does not support image creation",
                lambda: start_mirror(bb, str(tmp_path / "t.bochs"), device="hd0",
                                     format="bochs", registry=reg))


def test_closing_the_backend_cancels_its_job(tmp_path: Path, reg: JobRegistry) -> None:
    _, top, _ = make_chain(tmp_path, size=4 * MIB)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    ev = Events()
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", speed=1,
                       on_event=ev, registry=reg)
    ev.wait_status("running")
    bb.close()
    assert job.status == "null" and bb.closed and bb.job is None
    assert "BLOCK_JOB_CANCELLED" in ev.names()
    assert_check_clean(top)


@pytest.mark.parametrize("seed", range(3))
def test_several_writers_pauses_and_a_pivot(tmp_path: Path, reg: JobRegistry,
                                            seed: int) -> None:
    """Three writer threads on disjoint parts of the disk (as virtio-blk's I/O
    threads), the job paused and resumed and its speed changed while they write."""
    _, top, initial = make_chain(tmp_path, size=8 * MIB, seed=seed)
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    part = bb.size // 4096 // 3
    writers = [Writer(bb, seed=seed * 10 + k, blocks=part, first=k * part).start()
               for k in range(3)]
    ev = Events()
    job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", speed=4 * MIB,
                       granularity=4096 << seed, on_event=ev, registry=reg)
    ev.wait_status("running")
    job.pause()
    ev.wait_status("paused")
    writers[0].start_more(50)
    job.resume()
    job.set_speed(0)
    assert job.wait_ready(60)
    job.pause()
    ev.wait_status("standby")
    writers[1].start_more(50)
    job.resume()
    ev.wait_for(lambda: ev.statuses().count("ready") == 2)
    job.complete()
    assert job.wait(60)
    expected = bytearray(initial)
    for w in writers:
        w.stop()
        for blk, data in w.model.items():
            expected[blk * 4096:(blk + 1) * 4096] = data
    assert ev.statuses() == ["created", "running", "paused", "running", "ready", "standby",
                             "ready", "waiting", "pending", "concluded", "null"]
    verify(bb, bytes(expected))
    bb.close()
    assert_check_clean(str(tmp_path / "copy.qcow2"))


def test_mirror_into_an_existing_image_overwrites_all(tmp_path: Path,
                                                      reg: JobRegistry) -> None:
    from vmforge.block import create_image

    _, top, initial = make_chain(tmp_path, size=4 * MIB)
    target = str(tmp_path / "old.qcow2")
    create_image("qcow2", target, 4 * MIB)
    with BlockBackend.open(target, "qcow2", readonly=False) as t:
        t.write(0, b"\xee" * (4 * MIB))
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    job = start_mirror(bb, target, device="hd0", mode="existing", registry=reg)
    assert job.wait_ready(60)
    job.complete()
    assert job.wait(60)
    verify(bb, initial)
    bb.close()
    assert_same(top, target)


def test_complete_while_paused_pivots_once_resumed(tmp_path: Path, reg: JobRegistry) -> None:
    """QEMU takes complete on a paused ready job (standby): it pivots when resumed."""
    _, top, initial = make_chain(tmp_path, size=4 * MIB)
    target = str(tmp_path / "copy.qcow2")
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    job = start_mirror(bb, target, device="hd0", registry=reg)
    assert job.wait_ready(60)
    job.pause()
    assert job.status == "standby"
    job.complete()
    assert not job.wait(0.2) and bb.filename == top     # still paused
    job.resume()
    assert job.wait(60)
    assert bb.filename == target
    verify(bb, initial)
    bb.close()
