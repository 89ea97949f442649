"""vmforge.block.bitmap.DirtyBitmap against a Python set of dirty chunks."""

from __future__ import annotations

import random
import threading

import pytest

from vmforge.block.bitmap import DirtyBitmap


def _runs(chunks: set[int], g: int, size: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(chunks):
        start, end = c * g, min((c + 1) * g, size)
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, end - start))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_against_a_set_model(seed: int) -> None:
    r = random.Random(seed)
    g = 1 << r.randrange(0, 13)
    size = r.randrange(1, 300) * g + r.choice([0, r.randrange(1, g + 1)])
    bm = DirtyBitmap(size, g)
    nchunks = -(-size // g)
    model: set[int] = set()
    for _ in range(400):
        off = r.randrange(0, size + g)
        length = r.choice([0, 1, r.randrange(1, 4 * g), r.randrange(1, size + 1)])
        end = min(off + length, size)
        touched = set(range(off // g, (end - 1) // g + 1)) if end > off else set()
        op = r.random()
        if op < 0.45:
            bm.set(off, length)
            model |= touched
        elif op < 0.85:
            bm.clear(off, length)
            model -= touched
        elif op < 0.9:
            bm.clear_all()
            model.clear()
        elif op < 0.95:
            bm.set_all()
            model = set(range(nchunks))
        else:
            assert bm.is_dirty(off, length) == bool(touched & model)
        assert bm.count() == sum(min(g, size - c * g) for c in model)
    assert list(bm.dirty_runs()) == _runs(model, g, size)
    for c in range(nchunks):
        assert bm.get(c * g) == (c in model)
    probe = r.randrange(0, size)
    after = sorted(c for c in model if c * g + g > probe and c >= probe // g)
    got = bm.next_dirty(probe)
    assert (got[0] if got else None) == (after[0] * g if after else None)
    # runs from the chunk holding the probe on (a run across it starts there)
    assert list(bm.dirty_runs(probe, size)) == _runs({c for c in model if c >= probe // g},
                                                     g, size)


def test_next_dirty_is_limited_to_whole_chunks() -> None:
    bm = DirtyBitmap(1 << 20, 4096)
    bm.set(8192, 10 * 4096)
    assert bm.next_dirty(0, 3 * 4096) == (8192, 3 * 4096)
    assert bm.next_dirty(0, 100) == (8192, 4096)
    assert bm.next_dirty(9000) == (8192, 10 * 4096)
    assert bm.next_dirty(8192 + 10 * 4096) is None


def test_resize_and_to_bytes() -> None:
    bm = DirtyBitmap(10 * 512, 512)
    bm.set(9 * 512, 1)
    bm.set(0, 1)
    assert bm.to_bytes() == bytes([0x01, 0x02])
    bm.resize(20 * 512)
    assert list(bm.dirty_runs()) == [(0, 512), (9 * 512, 512)]
    bm.resize(5 * 512 + 7)
    assert list(bm.dirty_runs()) == [(0, 512)]
    bm.set_all()
    assert bm.count() == 5 * 512 + 7
    bm.resize(100 * 512)
    assert bm.count() == 6 * 512


def test_granularity_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of 2"):
        DirtyBitmap(4096, 3000)


def test_disabled_bitmap_ignores_marks() -> None:
    bm = DirtyBitmap(65536, 512)
    bm.enabled = False
    bm.mark(0, 512)
    assert bm.count() == 0
    bm.enabled = True
    bm.mark(0, 512)
    assert bm.count() == 512


def test_threads_setting_neighbouring_chunks_lose_nothing() -> None:
    # eight threads set every eighth chunk: bits of one byte, changed at once
    bm = DirtyBitmap(8 * 4096 * 512, 512)

    def work(k: int) -> None:
        for i in range(k, 8 * 4096, 8):
            bm.set(i * 512, 1)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bm.count() == bm.size
    assert list(bm.dirty_runs()) == [(0, bm.size)]
