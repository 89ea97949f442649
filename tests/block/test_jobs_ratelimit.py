"""The jobs' speed limit: QEMU's ratelimit (bytes per second, in 100 ms slices),
on a clock the test moves."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vmforge.block.jobs import job as jobmod
from vmforge.block.jobs.job import RateLimit

MS = 1_000_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    now = [10_000 * MS]
    monkeypatch.setattr(jobmod.time, "monotonic_ns", lambda: now[0])
    return now


def test_no_speed_no_delay(clock: list[int]) -> None:
    rl = RateLimit()
    assert rl.delay_ns(1 << 30) == 0 and rl.delay_ns(0) == 0


def test_a_chunk_over_the_quota_waits_its_share_of_slices(clock: list[int]) -> None:
    rl = RateLimit()
    rl.set_speed(1_000_000)                 # 100,000 bytes a 100 ms slice
    assert rl.slice_quota == 100_000
    assert rl.delay_ns(1 << 20) == 0        # the first piece of a slice always goes
    assert rl.delay_ns(0) == 1048 * MS + 576_000   # 1 MiB / 100,000 * 100 ms
    clock[0] += 500 * MS
    assert rl.delay_ns(0) == 548 * MS + 576_000
    clock[0] += 549 * MS                    # past the slice's end: a new slice
    assert rl.delay_ns(0) == 0


def test_pieces_within_the_quota_go_then_wait(clock: list[int]) -> None:
    rl = RateLimit()
    rl.set_speed(1_000_000)
    assert rl.delay_ns(60_000) == 0
    assert rl.delay_ns(40_000) == 0          # exactly the quota
    clock[0] += 10 * MS
    assert rl.delay_ns(1) == 90 * MS         # over: wait until the slice ends
    assert rl.delay_ns(0) == 0               # (0 bytes fit: the sleep loop's question)


def test_tiny_speeds_keep_a_quota_of_one_byte(clock: list[int]) -> None:
    rl = RateLimit()
    rl.set_speed(1)
    assert rl.slice_quota == 1


def test_a_new_speed_set_while_the_job_reads_its_delay_wakes_it(tmp_path: Any) -> None:
    """block-job-set-speed 0 arriving between the job's reading of its delay and its
    wait (seen in CI under load: a mirror at 1 byte/s asleep for hours after its
    speed was lifted).  Here the speed is lifted from another thread right as the
    job has read a delay; the job must still reach READY at once."""
    from tests.block.jobkit import make_chain
    from vmforge.block import BlockBackend
    from vmforge.block.jobs import JobRegistry, start_mirror

    _base, top, _data = make_chain(tmp_path, size=4 << 20)
    real = RateLimit.delay_ns
    lifted: list[threading.Thread] = []
    reg = JobRegistry()

    def delay_ns(self: RateLimit, n: int) -> int:
        delay = real(self, n)
        job = reg.get("hd0")        # (registered before its thread starts)
        if n == 0 and delay and not lifted and job is not None:
            t = threading.Thread(target=job.set_speed, args=(0,))
            lifted.append(t)
            t.start()
            t.join(0.5)     # done at once unless the job holds its lock: then it waits
        return delay

    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RateLimit, "delay_ns", delay_ns)
            job = start_mirror(bb, str(tmp_path / "copy.qcow2"), device="hd0", speed=1,
                               registry=reg)
            assert job.wait_ready(20), job.info()
        assert lifted and job.speed == 0
        job.cancel()
        assert job.wait(20)
