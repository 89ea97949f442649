"""The jobs' speed limit: QEMU's ratelimit (bytes per second, in 100 ms slices),
on a clock the test moves."""

from __future__ import annotations

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
