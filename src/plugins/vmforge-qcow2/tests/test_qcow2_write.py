"""Images vmforge creates and writes pass ``qemu-img check`` and ``qemu-img compare``."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_img, qemu_io, to_raw

from vmforge_qcow2 import Qcow2

pytestmark = needs_qemu
MiB = 1 << 20


def _compare(img: Path, model: bytes | bytearray, tmp_path: Path) -> None:
    ref = tmp_path / "model.raw"
    ref.write_bytes(bytes(model))
    p = qemu_img("compare", "-f", "qcow2", "-F", "raw", str(img), str(ref), check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def _random_writes(q: Qcow2, model: bytearray, seed: int, count: int = 40) -> None:
    rng = random.Random(seed)
    size = q.size
    for k in range(count):
        n = rng.choice([1, 511, 512, 4096, 65536, 70001, 300000])
        off = rng.randrange(0, size - n)
        if k % 7 == 0:
            off = off // 65536 * 65536
        data = pattern(n, seed * 1000 + k)
        if k % 3 == 0:   # vectored, split in three
            a, b = n // 3, 2 * n // 3
            q.pwritev(off, [memoryview(data[:a]), memoryview(data[a:b]),
                            memoryview(data[b:])])
        else:
            q.write(off, data)
        model[off:off + n] = data


@pytest.mark.parametrize("opts", [
    {},
    {"compat": "0.10"},
    {"cluster_size": 512},
    {"cluster_size": 4096, "refcount_bits": 1},
    {"cluster_size": 2 * MiB},
    {"refcount_bits": 64},
    {"refcount_bits": 8, "cluster_size": 1024},
    {"lazy_refcounts": True},
    {"preallocation": "metadata"},
    {"preallocation": "falloc", "compat": "0.10"},
])
def test_random_writes_pass_qemu_check_and_compare(tmp_path: Path, opts: dict) -> None:
    img = tmp_path / "w.qcow2"
    size = 6 * MiB + 1536
    Qcow2.create(str(img), size, **opts)
    assert_qemu_clean(img)
    model = bytearray(size)
    with Qcow2.open(str(img), readonly=False) as q:
        _random_writes(q, model, seed=len(str(opts)))
        assert q.read(0, size) == model
        r = q.check()
        assert r.clean, r.messages
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    assert info["virtual-size"] == size
    if opts.get("lazy_refcounts"):
        assert info["format-specific"]["data"]["lazy-refcounts"] is True
        assert info["dirty-flag"] is False


def test_many_small_clusters_grow_refcount_table(tmp_path: Path) -> None:
    """512-byte clusters with 64-bit refcounts: blocks cover 64 clusters, the table
    (one cluster: 64 blocks) has to move several times."""
    img = tmp_path / "g.qcow2"
    size = 7 * MiB
    Qcow2.create(str(img), size, cluster_size=512, refcount_bits=64)
    data = pattern(size, 5)
    with Qcow2.open(str(img), readonly=False) as q:
        old_table = q.refs.table_offset
        for off in range(0, size // 2, 256 * 1024):
            q.write(off, data[off:off + 256 * 1024])
        q.write(size // 2, data[size // 2:])      # one request needing dozens of blocks
        assert q.refs.table_offset != old_table
    assert_qemu_clean(img)
    _compare(img, data, tmp_path)


def test_write_zeroes_and_discard(tmp_path: Path) -> None:
    for compat in ("1.1", "0.10"):
        img = tmp_path / f"z{compat}.qcow2"
        size = 4 * MiB
        Qcow2.create(str(img), size, compat=compat)
        model = bytearray(pattern(size, 9))
        with Qcow2.open(str(img), readonly=False) as q:
            q.write(0, model)
            for off, n, unmap in ((100, 200000, False), (MiB, MiB, True),
                                  (3 * MiB + 5, 70000, False), (2 * MiB, 65536, False)):
                q.write_zeroes(off, n, may_unmap=unmap)
                model[off:off + n] = bytes(n)
            q.discard(size - 2 * 65536, 2 * 65536)
            model[size - 2 * 65536:] = bytes(2 * 65536)
            assert q.read(0, size) == model
            ext = list(q.block_status(MiB, MiB))
            assert all(not e.is_data for e in ext)
            if compat == "1.1":
                assert all(e.is_zero and e.is_allocated for e in ext)
        assert_qemu_clean(img)
        _compare(img, model, tmp_path)
        # zeroed without unmap keeps the preallocation in v3 (qemu-img map: zero, offset)
        qmap = json.loads(qemu_img("map", "--output", "json", str(img)).stdout)
        assert any(e["zero"] and not e["data"] for e in qmap)


def test_compressed_writes_two_threads_read_by_qemu(tmp_path: Path) -> None:
    img = tmp_path / "c.qcow2"
    cs = 65536
    size = 32 * cs + 1024       # a short last cluster
    Qcow2.create(str(img), size)
    chunks = {}
    for i in range(33):
        n = cs if i < 32 else 1024
        body = (bytes([i]) * 300 + pattern(200, i)) * (n // 500 + 2)
        chunks[i * cs] = body[:n]
    chunks[5 * cs] = pattern(cs, 77)          # incompressible: stored plainly
    errors: list[BaseException] = []
    with Qcow2.open(str(img), readonly=False) as q:
        def work(offs: list[int]) -> None:
            try:
                for off in offs:
                    q.write_compressed(off, chunks[off])
            except BaseException as e:  # reported below
                errors.append(e)
        offs = sorted(chunks)
        threads = [threading.Thread(target=work, args=(offs[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        # overwrite part of a compressed cluster: copy-on-write decompresses
        q.write(3 * cs + 10, b"patched")
    model = bytearray(b"".join(chunks[o] for o in sorted(chunks)))
    model[3 * cs + 10:3 * cs + 17] = b"patched"
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)
    check = json.loads(qemu_img("check", "--output", "json", str(img)).stdout)
    assert check["compressed-clusters"] >= 30


def test_truncate_grow_and_shrink(tmp_path: Path) -> None:
    img = tmp_path / "t.qcow2"
    Qcow2.create(str(img), MiB, cluster_size=4096)
    data = pattern(MiB, 3)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, data)
        q.truncate(600 * MiB)       # needs a bigger L1 table (4k clusters: 2 MiB per L2)
        q.write(599 * MiB, b"far")
    assert_qemu_clean(img)
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    assert info["virtual-size"] == 600 * MiB
    assert qemu_io(img, "read -P 0 1M 1M", "read -P 0x66 599M 1").count("read") == 2
    with Qcow2.open(str(img), readonly=False) as q:
        q.truncate(MiB // 2 + 512)
        q.truncate(MiB)
        assert q.read(0, MiB // 2 + 512) == data[:MiB // 2 + 512]
        assert q.read(MiB // 2 + 512, MiB // 2 - 512) == bytes(MiB // 2 - 512)
    assert_qemu_clean(img)


def test_writes_to_image_with_snapshots_copy_on_write(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    Qcow2.create(str(img), 2 * MiB)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"\x01" * (2 * MiB))
    qemu_img("snapshot", "-c", "snap", str(img))
    model = bytearray(b"\x01" * (2 * MiB))
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(1000, b"\x02" * 100000)
        model[1000:101000] = b"\x02" * 100000
        q.write_zeroes(MiB, 65536, may_unmap=True)
        model[MiB:MiB + 65536] = bytes(65536)
        q.discard(MiB + 65536, 65536)
        model[MiB + 65536:MiB + 131072] = bytes(65536)
    assert_qemu_clean(img)
    assert to_raw(img, tmp_path / "snap.raw", snapshot="snap") == b"\x01" * (2 * MiB)
    _compare(img, model, tmp_path)
    with Qcow2.open(str(img), snapshot="snap") as s:
        assert s.read(0, s.size) == b"\x01" * (2 * MiB)
        assert s.readonly
    # qemu-img can delete the snapshot afterwards and the image stays consistent
    qemu_img("snapshot", "-d", "snap", str(img))
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)


def test_overlay_created_by_vmforge(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(MiB, 1))
    top = tmp_path / "top.qcow2"
    Qcow2.create(str(top), MiB, backing_file="base.raw", backing_fmt="raw")
    info = json.loads(qemu_img("info", "--output", "json", str(top)).stdout)
    assert info["backing-filename"] == "base.raw"
    assert info["backing-filename-format"] == "raw"
    model = bytearray(base.read_bytes())
    with Qcow2.open(str(top), readonly=False) as q:
        # a partial-cluster write takes the rest of the cluster from backing_reader
        with open(base, "rb") as fh:
            def reader(off: int, parts: list[memoryview]) -> None:
                for p in parts:
                    fh.seek(off)
                    p[:] = fh.read(p.nbytes).ljust(p.nbytes, b"\0")
                    off += p.nbytes
            q.backing_reader = reader
            q.write(70000, b"new")
        model[70000:70003] = b"new"
        q.write_zeroes(0, 65536)          # zero flag hides the backing file (v3)
        model[0:65536] = bytes(65536)
    assert_qemu_clean(top)
    _compare(top, model, tmp_path)
    with Qcow2.open(str(top), readonly=False) as q:
        q.change_backing_file("other.raw", "raw")
    info = json.loads(qemu_img("info", "--output", "json", str(top)).stdout)
    assert info["backing-filename"] == "other.raw"


def test_unknown_header_extension_preserved(tmp_path: Path) -> None:
    import struct

    img = tmp_path / "e.qcow2"
    Qcow2.create(str(img), MiB)
    with Qcow2.open(str(img)) as q:
        end = q.h.header_length + sum(8 + len(e.data) + (-len(e.data) % 8)
                                      for e in q.h.extensions)
    with open(img, "r+b") as f:   # add an unknown extension before the end marker
        f.seek(end)
        f.write(struct.pack(">II", 0x12345678, 5) + b"hello\0\0\0" + bytes(8))
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, b"x" * 1000)
        q.change_backing_file("b.raw", "raw")
        q.change_backing_file(None, None)
    with Qcow2.open(str(img)) as q:
        ext = q.h.ext(0x12345678)
        assert ext is not None and ext.data == b"hello"
    assert_qemu_clean(img)


def test_measure_matches_qemu(tmp_path: Path) -> None:
    for opts in ({}, {"cluster_size": 4096}, {"refcount_bits": 64},
                 {"extended_l2": "on", "cluster_size": 16384}):
        q_opts = ",".join(f"{k}={v}" for k, v in opts.items())
        args = ["measure", "--output", "json", "--size", "100M", "-O", "qcow2"]
        if q_opts:
            args += ["-o", q_opts]
        theirs = json.loads(qemu_img(*args).stdout)
        ours = Qcow2.measure(100 * MiB, None, **opts)
        assert ours["required"] == theirs["required"], opts
        assert ours["fully-allocated"] == theirs["fully-allocated"], opts


def test_chain_through_block_backend(tmp_path: Path) -> None:
    """qcow2 over qcow2 over raw, opened by vmforge's BlockBackend: reads and
    copy-on-write writes agree with qemu-img."""
    from vmforge.block.backend import BlockBackend

    raw = tmp_path / "base.raw"
    raw.write_bytes(pattern(2 * MiB, 11))
    mid = tmp_path / "mid.qcow2"
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", str(mid))
    qemu_io(mid, "write -P 0x21 100k 200k", "write -z 1M 64k")
    Qcow2.create(str(top), 2 * MiB, backing_file="mid.qcow2", backing_fmt="qcow2",
                 cluster_size=4096)
    with BlockBackend.open(str(top), "qcow2", readonly=False) as bb:
        bb.write(5, b"top-partial")               # widened to a cluster from the chain
        bb.write(1 * MiB + 70000, b"Z" * 9000)    # over the zero cluster of mid
        bb.write_zeroes(150 * 1024, 3000)
    expect = bytearray(to_raw(mid, tmp_path / "mid.raw"))
    expect[5:16] = b"top-partial"
    expect[MiB + 70000:MiB + 79000] = b"Z" * 9000
    expect[150 * 1024:150 * 1024 + 3000] = bytes(3000)
    assert_qemu_clean(top)
    _compare(top, expect, tmp_path)
    with BlockBackend.open(str(top), "qcow2") as bb:
        assert bb.read(0, bb.size) == expect


def test_compressed_packing_never_reuses_a_freed_cluster(tmp_path: Path) -> None:
    """Regression (found by the model test): a compressed cluster is rewritten
    (its host cluster freed and reused for data), then another compressed write
    must not pack into that cluster."""
    img = tmp_path / "p.qcow2"
    Qcow2.create(str(img), 512 * 1024, cluster_size=512, refcount_bits=64)
    data = (b"\0" * 100 + bytes(range(100))) * 3
    with Qcow2.open(str(img), readonly=False) as q:
        q.write_compressed(0, data[:512])
        q.write(0, b"\0")
        q.write_compressed(39936, data[:512])
        model = bytearray(512 * 1024)
        model[0:512] = data[:512]
        model[0] = 0
        model[39936:39936 + 512] = data[:512]
        assert q.read(0, q.size) == model
        assert q.check().clean
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)


def test_measure_with_data_matches_qemu(tmp_path: Path) -> None:
    import os

    raw = tmp_path / "sparse.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        for off in (0, 5 * MiB + 4096, 40 * MiB - 100):
            f.seek(off)
            f.write(b"d" * 200000)
    ranges = []
    fd = os.open(raw, os.O_RDONLY)
    try:
        pos = 0
        while pos < 64 * MiB:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    theirs = json.loads(qemu_img("measure", "--output", "json", "-f", "raw", "-O", "qcow2",
                                 str(raw)).stdout)
    ours = Qcow2.measure(64 * MiB, ranges)
    assert ours["required"] == theirs["required"]
    assert ours["fully-allocated"] == theirs["fully-allocated"]


@pytest.mark.parametrize("cluster_size", [16384, 65536])
def test_extended_l2_writes_pass_qemu(tmp_path: Path, cluster_size: int) -> None:
    img = tmp_path / "x.qcow2"
    size = 4 * MiB
    Qcow2.create(str(img), size, extended_l2=True, cluster_size=cluster_size)
    info = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    assert info["format-specific"]["data"]["extended-l2"] is True
    sc = cluster_size // 32
    model = bytearray(size)
    with Qcow2.open(str(img), readonly=False) as q:
        _random_writes(q, model, seed=cluster_size, count=30)
        for off, n, unmap in ((sc // 2, 3 * sc, False), (MiB, cluster_size * 3, True),
                              (2 * MiB + 5, 7, False), (3 * MiB, sc, False)):
            q.write_zeroes(off, n, may_unmap=unmap)
            model[off:off + n] = bytes(n)
        q.discard(size - cluster_size, cluster_size)
        model[size - cluster_size:] = bytes(cluster_size)
        q.write_compressed(cluster_size * 10, b"z" * cluster_size)
        model[cluster_size * 10:cluster_size * 11] = b"z" * cluster_size
        q.write(cluster_size * 10 + sc + 3, b"into compressed")
        model[cluster_size * 10 + sc + 3:cluster_size * 10 + sc + 18] = b"into compressed"
        assert q.read(0, size) == model
        assert q.check().clean
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)
    # qemu-img writes subclusters into our image; we read them back
    qemu_io(img, f"write -P 0x5a {sc} {sc}", f"write -z {4 * sc} {sc}")
    model[sc:2 * sc] = b"\x5a" * sc
    model[4 * sc:5 * sc] = bytes(sc)
    with Qcow2.open(str(img)) as q:
        assert q.read(0, size) == model


def test_extended_l2_overlay_keeps_backing_subclusters(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(MiB, 21))
    top = tmp_path / "top.qcow2"
    Qcow2.create(str(top), MiB, extended_l2=True, cluster_size=65536,
                 backing_file="base.raw", backing_fmt="raw")
    sc = 65536 // 32
    with Qcow2.open(str(top), readonly=False) as q:
        q.write(3 * sc, b"A" * sc)              # one whole subcluster: no copy-on-write
        q.write_zeroes(10 * sc, sc)
        ext = list(q.block_status(0, 65536))
        assert [(e.offset, e.length, e.is_allocated) for e in ext] == [
            (0, 3 * sc, False), (3 * sc, sc, True), (4 * sc, 6 * sc, False),
            (10 * sc, sc, True), (11 * sc, 65536 - 11 * sc, False)]
    expect = bytearray(base.read_bytes())
    expect[3 * sc:4 * sc] = b"A" * sc
    expect[10 * sc:11 * sc] = bytes(sc)
    assert_qemu_clean(top)
    assert to_raw(top, tmp_path / "t.raw") == expect


def test_threads_share_one_image(tmp_path: Path) -> None:
    """Writers, compressed writers and readers on several threads (disjoint ranges)."""
    img = tmp_path / "t.qcow2"
    size = 8 * MiB
    Qcow2.create(str(img), size, cluster_size=4096)
    model = bytearray(size)
    errors: list[BaseException] = []
    with Qcow2.open(str(img), readonly=False) as q:
        def worker(k: int) -> None:
            try:
                base = k * 2 * MiB
                for j in range(40):
                    off = base + (j * 48611) % (2 * MiB - 9000)
                    data = pattern(9000, k * 100 + j)
                    if j % 5 == 4:
                        c = off // 4096 * 4096
                        q.write_compressed(c, data[:4096])
                        model[c:c + 4096] = data[:4096]
                    else:
                        q.write(off, data)
                        model[off:off + 9000] = data
                    q.read(base, 65536)
                    if j % 9 == 0:
                        q.flush()
            except BaseException as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert q.read(0, size) == model
    assert_qemu_clean(img)
    _compare(img, model, tmp_path)
