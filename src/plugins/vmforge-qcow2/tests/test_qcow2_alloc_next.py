"""Refcounts.alloc_next: alloc's clusters where they follow the first free one, else
nothing (a batch of convert's writes is allocated at once only there)."""

from __future__ import annotations

from pathlib import Path

from vmforge_qcow2 import Qcow2

MiB = 1 << 20


def _state(q: Qcow2) -> tuple[int, int, list[int]]:
    r = q.refs
    return r.hint, r.alloc_end, [r.get(c) for c in range(64)]


def test_alloc_next_takes_what_alloc_takes_after_the_first_free_cluster(
        tmp_path: Path) -> None:
    for n in (1, 2, 7, 40):
        paths = [tmp_path / f"{n}{k}.qcow2" for k in "ab"]
        states = []
        for p, nxt in zip(paths, (True, False), strict=True):
            Qcow2.create(str(p), 16 * MiB)
            with Qcow2.open(str(p), readonly=False) as q:
                q.write(0, b"x")
                got = q.refs.alloc_next(n) if nxt else q.refs.alloc(n)
                states.append((got, _state(q)))
        assert states[0] == states[1], n
        assert paths[0].read_bytes() == paths[1].read_bytes()


def test_alloc_next_refuses_a_run_that_does_not_start_at_the_first_free_cluster(
        tmp_path: Path) -> None:
    p = tmp_path / "h.qcow2"
    Qcow2.create(str(p), 16 * MiB)
    with Qcow2.open(str(p), readonly=False) as q:
        r = q.refs
        a = r.alloc(3)
        r.free(a + q.cs, q.cs)            # a hole of one cluster, the first free one
        r.hint = 1
        before = _state(q)
        assert r.alloc_next(2) is None     # (alloc would take two after the hole)
        assert _state(q) == before
        assert r.alloc_next(1) == a + q.cs  # the hole itself
