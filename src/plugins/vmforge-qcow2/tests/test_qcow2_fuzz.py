"""Fuzz the header and table parsers: mutated images fail cleanly (BlockError) or work."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmforge.block import BlockError
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.header import parse_header

MiB = 1 << 20
# mutated images may carry the corrupt or bitmaps bits: their warnings are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _seed_image(**opts: object) -> bytes:
    """A small v3 image with data, zero, compressed clusters and a snapshot."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "seed.qcow2")
        Qcow2.create(p, 2 * MiB, **opts)
        with Qcow2.open(p, readonly=False) as q:
            cs = q.cluster_size
            q.write(0, bytes(range(256)) * 40)
            q.create_snapshot("fuzz")
            q.write(MiB + 123, b"\x77" * 9000)
            q.write_zeroes(65536, 8192)
            q.write_compressed(1536 * 1024, (b"compress me " * (cs // 12 + 1))[:cs])
        return Path(p).read_bytes()


SEED = _seed_image(cluster_size=4096)
SEED_EXT = _seed_image(cluster_size=16384, extended_l2=True)

#: the interesting bytes: header, L1, refcount table/blocks, first L2 tables
HOT = min(len(SEED_EXT), 12 * 16384)

mutation = st.one_of(
    st.tuples(st.integers(0, HOT - 1), st.binary(min_size=1, max_size=1)),
    st.tuples(st.integers(0, HOT - 8),
              st.sampled_from([b"\xff" * 8, b"\x7f" + b"\xff" * 7, bytes(8),
                               b"\x00\x00\x00\x00\x00\x00\x10\x00",
                               b"\x80\x00\x00\x00\x00\x00\x10\x00",
                               b"\x40\x00\x00\x00\x00\x00\x20\x00",
                               b"\x00\x00\x00\x01\x00\x00\x00\x00"])),
    st.tuples(st.integers(0, 111), st.binary(min_size=1, max_size=8)),
)


def _exercise(path: str) -> None:
    try:
        q = Qcow2.open(path, readonly=True)
    except BlockError:
        return
    try:
        n = min(q.size, 4 * MiB)
        for _ in zip(range(10000), q.block_status(0, n), strict=False):
            pass
        q.read(0, n)
        q.check()
        q.info()
        q.snapshots()
    except BlockError:
        pass
    finally:
        q.close()


@settings(max_examples=int(os.environ.get("QCOW2_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(muts=st.lists(mutation, min_size=1, max_size=6), ext=st.booleans())
def test_mutated_images_fail_cleanly(tmp_path: Path, muts: list[tuple[int, bytes]],
                                     ext: bool) -> None:
    data = bytearray(SEED_EXT if ext else SEED)
    for off, b in muts:
        data[off:off + len(b)] = b
    path = tmp_path / "fuzz.qcow2"
    path.write_bytes(bytes(data))
    t0 = time.monotonic()
    _exercise(str(path))
    assert time.monotonic() - t0 < 10, "took too long"


@settings(max_examples=int(os.environ.get("QCOW2_FUZZ_EXAMPLES", "100")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=st.lists(mutation, min_size=1, max_size=6), writes=st.integers(0, 3))
def test_mutated_images_writes_fail_cleanly(tmp_path: Path, muts: list[tuple[int, bytes]],
                                            writes: int) -> None:
    data = bytearray(SEED)
    for off, b in muts:
        data[off:off + len(b)] = b
    path = tmp_path / "fuzzw.qcow2"
    path.write_bytes(bytes(data))
    try:
        q = Qcow2.open(str(path), readonly=False)
    except BlockError:
        return
    try:
        for i in range(writes):
            off = (i * 700001) % max(1, q.size - 5000)
            q.write(off, b"w" * 5000)
        if q.size > 3 * 4096:
            q.write_zeroes(4096, 8192)
            q.discard(0, 4096)
        q.check(repair="all")
    except BlockError:
        pass
    finally:
        try:
            q.close()
        except BlockError:
            pass


@settings(max_examples=300, deadline=None)
@given(head=st.binary(min_size=0, max_size=600), size=st.integers(0, 1 << 64))
def test_parse_header_never_crashes(head: bytes, size: int) -> None:
    buf = b"QFI\xfb" + head if head[:1] != b"x" else head
    try:
        parse_header(buf, "fuzz", size)
    except BlockError:
        pass


@pytest.mark.parametrize("cut", range(0, len(SEED), 4096 + 7))
def test_every_truncation(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.qcow2"
    path.write_bytes(SEED[:cut])
    _exercise(str(path))
