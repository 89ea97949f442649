"""Random operation sequences against a bytearray model; qemu-img checks the result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcow2_oracle import assert_qemu_clean, needs_qemu, qemu_img

from vmforge.block import BlockError
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.compress import zstd_module

pytestmark = needs_qemu
KiB = 1024
HAVE_ZSTD = zstd_module() is not None
SIZE = 512 * KiB

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, SIZE - 1), st.integers(1, 40 * KiB),
              st.integers(0, 255)),
    st.tuples(st.just("zero"), st.integers(0, SIZE - 1), st.integers(1, 64 * KiB),
              st.booleans()),
    st.tuples(st.just("discard"), st.integers(0, SIZE - 1), st.integers(1, 64 * KiB),
              st.just(0)),
    st.tuples(st.just("compress"), st.integers(0, SIZE - 1), st.just(0), st.integers(0, 255)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("snapshot"), st.just(0), st.just(0), st.booleans()),
    st.tuples(st.just("delsnap"), st.just(0), st.just(0), st.integers(0, 3)),
    st.tuples(st.just("revert"), st.just(0), st.just(0), st.integers(0, 3)),
    st.tuples(st.just("damage"), st.integers(0, 1 << 20), st.just(0), st.booleans()),
    st.tuples(st.just("resize"), st.integers(1, 2 * SIZE // 512), st.just(0), st.just(0)),
)


@settings(max_examples=int(os.environ.get("QCOW2_MODEL_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=25),
       cfg=st.sampled_from([
           {"cluster_size": 4096},
           {"cluster_size": 4096, "compat": "0.10"},
           {"cluster_size": 512, "refcount_bits": 64},
           {"cluster_size": 1024, "refcount_bits": 2},
           {"cluster_size": 65536, "lazy_refcounts": True},
           {"cluster_size": 16384, "extended_l2": True},
           {"cluster_size": 4096, "data_file": "m.data", "data_file_raw": True},
           *([{"cluster_size": 4096, "compression_type": "zstd"}] if HAVE_ZSTD else []),
       ]))
def test_random_operations_match_model(ops: list[tuple], cfg: dict) -> None:
    with tempfile.TemporaryDirectory() as d:
        img = Path(d) / "m.qcow2"
        if "data_file" in cfg:
            cfg = dict(cfg, data_file=str(Path(d) / cfg["data_file"]))
        Qcow2.create(str(img), SIZE, **cfg)
        model = bytearray(SIZE)
        snaps: dict[str, bytes] = {}
        taken = 0
        q = Qcow2.open(str(img), readonly=False)
        cs = q.cluster_size
        try:
            for kind, off, n, arg in ops:
                size = len(model)
                if kind in ("write", "zero", "discard", "compress"):
                    off %= size
                n = min(n, size - off)
                if kind == "snapshot" and "data_file" in cfg:
                    continue       # not possible with an external data file
                if kind == "write":
                    data = bytes([arg]) * n
                    q.write(off, data)
                    model[off:off + n] = data
                elif kind == "zero":
                    q.write_zeroes(off, n, may_unmap=arg)
                    model[off:off + n] = bytes(n)
                elif kind == "discard":
                    q.discard(off, n)   # contents unspecified: take what the image says
                    model[off:off + n] = q.read(off, n)
                elif kind == "compress":
                    c = off // cs * cs
                    k = min(cs, size - c)
                    data = (bytes([arg]) * 100 + bytes(range(100))) * (cs // 200 + 1)
                    q.write_compressed(c, data[:k])
                    model[c:c + k] = data[:k]
                elif kind == "resize":
                    new = off * 512
                    try:
                        q.truncate(new)
                    except BlockError as e:
                        assert snaps and "snapshots" in str(e)
                        continue
                    if new < size:
                        del model[new:]
                    else:
                        model.extend(bytes(new - size))
                elif kind == "snapshot" and arg:   # vmforge takes an internal snapshot
                    taken += 1
                    name = f"v{taken}"
                    try:
                        q.create_snapshot(name)
                        snaps[name] = bytes(model)
                    except BlockError as e:   # narrow refcounts overflow: nothing changes
                        assert "overflow" in str(e)
                        assert q.check().clean
                elif kind == "snapshot":       # qemu-img takes an internal snapshot
                    q.close()
                    taken += 1
                    name = f"q{taken}"
                    if qemu_img("snapshot", "-c", name, str(img), check=False).returncode == 0:
                        snaps[name] = bytes(model)
                    else:   # narrow refcounts overflow; QEMU leaves leaks behind
                        qemu_img("check", "-r", "leaks", str(img), check=False)
                    q = Qcow2.open(str(img), readonly=False)
                elif kind == "revert":
                    if snaps:
                        name = sorted(snaps)[arg % len(snaps)]
                        try:
                            q.revert_snapshot(name)
                            model[:] = snaps[name]
                        except BlockError as e:   # narrow refcounts overflow: no change
                            assert "overflow" in str(e)
                            assert q.check().clean
                elif kind == "damage":   # lose or add a reference count, then repair
                    q.flush()
                    c = off % max(1, q.f.end >> q.cb)
                    v = q.refs.get(c)
                    if arg and v:
                        q.refs.update(c, 1, -v)
                    elif v < q.refs.codec.max:
                        q.refs.update(c, 1, +1)
                    r = q.check(repair="all")
                    assert r.clean, r.messages
                elif kind == "delsnap":
                    if snaps:
                        name = sorted(snaps)[arg % len(snaps)]
                        q.delete_snapshot(name)
                        del snaps[name]
                else:
                    q.close()
                    q = Qcow2.open(str(img), readonly=False)
            assert q.size == len(model)
            assert q.read(0, q.size) == model
            r = q.check()
            assert r.clean, r.messages
        finally:
            q.close()
        for name, content in snaps.items():
            with Qcow2.open(str(img), snapshot=name) as s:
                assert s.read(0, s.size) == content, name
        assert_qemu_clean(img)
        ref = Path(d) / "m.raw"
        ref.write_bytes(bytes(model))
        p = qemu_img("compare", "-f", "qcow2", "-F", "raw", str(img), str(ref), check=False)
        assert p.returncode == 0, p.stdout
        if cfg.get("data_file_raw"):     # the data file is a raw image of the disk
            assert Path(cfg["data_file"]).read_bytes()[:len(model)] == bytes(model)
