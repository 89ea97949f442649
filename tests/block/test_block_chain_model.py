"""A three-image chain against a bytearray model, under random writes (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmforge.block import BlockBackend, driver_class
from vmforge.testing.images import mixed_bytes

SIZE = 256 * 1024
BLOCK = 4096

ops = st.lists(
    st.tuples(st.sampled_from(["write", "zero", "write"]),
              st.integers(0, SIZE - 1), st.integers(1, 3 * BLOCK + 7), st.integers(1, 255)),
    min_size=1, max_size=12)


@pytest.mark.formats("raw", "example")
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mid_ops=ops, top_ops=ops, top_size=st.sampled_from([SIZE, SIZE + 3 * BLOCK]))
def test_chain_reads_what_a_model_says(tmp_path_factory, mid_ops, top_ops, top_size) -> None:
    d = tmp_path_factory.mktemp("chain")
    base_data = mixed_bytes(SIZE // 2, seed=5, piece=BLOCK)
    (d / "base.raw").write_bytes(base_data)
    ex = driver_class("example")
    ex.create(str(d / "mid.ex"), SIZE, backing_file="base.raw", backing_fmt="raw",
              block_size=BLOCK)
    ex.create(str(d / "top.ex"), top_size, backing_file="mid.ex", backing_fmt="example",
              block_size=2 * BLOCK)
    model = bytearray(base_data) + bytes(SIZE - len(base_data))
    for path, size, steps in ((d / "mid.ex", SIZE, mid_ops), (d / "top.ex", top_size, top_ops)):
        model = model[:size] + bytes(max(0, size - len(model)))
        with BlockBackend.open(str(path), readonly=False) as bb:
            for kind, off, n, byte in steps:
                n = min(n, size - off)
                if kind == "write":
                    bb.write(off, bytes([byte]) * n)
                    model[off:off + n] = bytes([byte]) * n
                else:
                    bb.write_zeroes(off, n)
                    model[off:off + n] = bytes(n)
            assert bb.read(0, size) == model
    with BlockBackend.open(str(d / "top.ex")) as bb:
        assert len(bb.layers) == 3
        assert bb.read(0, top_size) == model
        pos = 0
        for e in bb.block_status():
            assert e.offset == pos
            pos = e.end
            if e.is_zero and not e.is_data:
                assert not any(model[e.offset:e.end]), e
        assert pos == top_size
    with open(d / "base.raw", "rb") as f:
        assert f.read() == base_data


@pytest.mark.formats("raw", "qcow2")
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top_ops=ops)
def test_qcow2_overlay_judged_by_qemu(tmp_path_factory, qemu, top_ops) -> None:
    """Random writes through BlockBackend into a qcow2 overlay: qemu-img reads the model."""
    d = tmp_path_factory.mktemp("q")
    base_data = mixed_bytes(SIZE, seed=6, piece=BLOCK)
    (d / "base.raw").write_bytes(base_data)
    top = str(d / "top.qcow2")
    driver_class("qcow2").create(top, SIZE, backing_file="base.raw", backing_fmt="raw",
                                 cluster_size=16384)
    model = bytearray(base_data)
    with BlockBackend.open(top, readonly=False) as bb:
        for kind, off, n, byte in top_ops:
            n = min(n, SIZE - off)
            if kind == "write":
                bb.write(off, bytes([byte]) * n)
                model[off:off + n] = bytes([byte]) * n
            else:
                bb.write_zeroes(off, n)
                model[off:off + n] = bytes(n)
    (d / "model.raw").write_bytes(model)
    assert qemu("img", "check", top).returncode == 0
    r = qemu("img", "compare", "-F", "raw", top, str(d / "model.raw"), check=False)
    assert r.returncode == 0, r.stdout
