"""virtio-blk with the guest-side driver: every request type, read-only disks, bad
requests, multi-queue, backing chains, many requests in flight, every ring layout."""

from __future__ import annotations

import struct

import pytest

from vmforge.block import create_image
from vmforge.device import DeviceError
from vmforge.testing.virtio_driver import DeviceLoop, GuestAllocator
from vmforge.testing.virtio_kit import ALL_RING_MODES, RAM, RAM_SIZE, guest_memory, make
from vmforge.testing.virtio_suite import VirtioConformance
from vmforge.virtio import spec
from vmforge_virtio import blk
from vmforge_virtio.blk import VirtioBlk

SIZE = 1 << 20


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + i // 512) & 0xFF for i in range(n))


PATTERN = _pattern(SIZE)


def pattern(n: int) -> bytes:
    return PATTERN[:n]


class Disk:
    """A virtio-blk device on a raw image, a driver and the loop its completions run on."""

    def __init__(self, path, mode="split", **props):
        self.loop = DeviceLoop()
        self.memory = guest_memory()
        kw = dict(ALL_RING_MODES[mode])
        if kw.pop("packed", False):
            props["packed"] = True
        self.dev = VirtioBlk(drive=str(path), format=props.pop("format", "raw"), **props)
        self.dev_, self.t, self.drv, self.queues = make(
            self.memory, GuestAllocator(RAM, RAM_SIZE), device=self.dev,
            call_soon=self.loop.call_soon, **kw)
        self.q = self.queues[0]

    def submit(self, rtype, sector=0, out=(), in_=(), q=None):
        q = q or self.q
        hdr = struct.pack("<IIQ", rtype, 0, sector)
        req = q.add_sgs([hdr, *out], [*in_, 1])
        q.kick()
        return req

    def wait(self, q=None, count=1):
        q = q or self.q
        got = []
        assert self.loop.run_until(lambda: got.extend(q.drain()) or len(got) >= count, 10)
        return got

    def request(self, rtype, sector=0, out=(), in_=(), q=None):
        req = self.submit(rtype, sector, out, in_, q)
        (done,) = self.wait(q)
        assert done is req
        status = self.memory.read_u8(done.in_[-1][0])  # the last writable byte
        data = done.data()
        return status, data[:-1] if status == blk.S_OK else b""

    def close(self):
        self.dev.unrealize()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(pattern(SIZE))
    return path


@pytest.fixture
def disk(image):
    d = Disk(image)
    yield d
    d.close()


def test_config_space(disk):
    cfg = disk.drv.config_bytes(0, 60)
    capacity, _size_max, seg_max = struct.unpack_from("<QII", cfg, 0)
    assert capacity == SIZE // 512 and seg_max == 254
    assert struct.unpack_from("<I", cfg, 20)[0] == 512  # blk_size
    assert struct.unpack_from("<H", cfg, 34)[0] == 1  # num_queues
    max_discard, discard_seg = struct.unpack_from("<II", cfg, 36)
    assert max_discard > 0 and discard_seg == 1
    assert cfg[56] == 1  # write_zeroes_may_unmap
    features = disk.dev.driver_features
    for bit in (blk.VIRTIO_BLK_F_FLUSH, blk.VIRTIO_BLK_F_DISCARD, blk.VIRTIO_BLK_F_WRITE_ZEROES,
                blk.VIRTIO_BLK_F_BLK_SIZE, blk.VIRTIO_BLK_F_SEG_MAX):
        assert features >> bit & 1
    assert not features >> blk.VIRTIO_BLK_F_RO & 1


@pytest.mark.parametrize("mode", sorted(ALL_RING_MODES))
def test_read_scattered_in_every_layout(image, mode):
    d = Disk(image, mode)
    try:
        status, data = d.request(blk.T_IN, 3, in_=[512, 1024, 512])
        assert status == blk.S_OK and data == pattern(SIZE)[3 * 512:7 * 512]
    finally:
        d.close()


def test_write_then_read_back(disk, image):
    payload = bytes(range(256)) * 8
    status, _ = disk.request(blk.T_OUT, 10, out=[payload[:1024], payload[1024:]])
    assert status == blk.S_OK
    status, data = disk.request(blk.T_IN, 10, in_=[2048])
    assert status == blk.S_OK and data == payload
    assert disk.request(blk.T_FLUSH)[0] == blk.S_OK
    assert image.read_bytes()[10 * 512:10 * 512 + 2048] == payload
    stats = disk.dev.statistics()
    assert stats["writes"] == 1 and stats["reads"] == 1 and stats["flushes"] == 1
    assert stats["bytes_written"] == 2048 and stats["bytes_read"] == 2048


def test_get_id_is_the_serial(image):
    d = Disk(image, serial="VMFORGE-0001")
    try:
        status, data = d.request(blk.T_GET_ID, in_=[20])
        assert status == blk.S_OK and data == b"VMFORGE-0001".ljust(20, b"\0")
    finally:
        d.close()
    d = Disk(image, serial="0123456789abcdefghijKLMN")     # QEMU: the first 20 bytes
    try:
        status, data = d.request(blk.T_GET_ID, in_=[20])
        assert status == blk.S_OK and data == b"0123456789abcdefghij"
    finally:
        d.close()


def test_discard_and_write_zeroes(disk):
    rng = struct.pack("<QII", 8, 4, 0)
    assert disk.request(blk.T_DISCARD, out=[rng])[0] == blk.S_OK
    unmap = struct.pack("<QII", 16, 2, 1)
    assert disk.request(blk.T_WRITE_ZEROES, out=[unmap])[0] == blk.S_OK
    assert disk.request(blk.T_IN, 16, in_=[1024])[1] == bytes(1024)
    assert disk.request(blk.T_IN, 18, in_=[512])[1] == pattern(SIZE)[18 * 512:19 * 512]
    assert disk.request(blk.T_DISCARD, out=[struct.pack("<QII", 8, 4, 1)])[0] == blk.S_UNSUPP
    two = struct.pack("<QII", 0, 1, 0) * 2  # more segments than max_discard_seg
    assert disk.request(blk.T_DISCARD, out=[two])[0] == blk.S_UNSUPP
    past = struct.pack("<QII", SIZE // 512 - 1, 2, 0)
    assert disk.request(blk.T_WRITE_ZEROES, out=[past])[0] == blk.S_IOERR


def test_read_only_disk(image):
    d = Disk(image, readonly=True)
    try:
        assert d.dev.driver_features >> blk.VIRTIO_BLK_F_RO & 1
        assert not d.dev.driver_features >> blk.VIRTIO_BLK_F_DISCARD & 1
        assert d.request(blk.T_OUT, 0, out=[bytes(512)])[0] == blk.S_IOERR
        assert d.request(blk.T_DISCARD, out=[struct.pack("<QII", 0, 1, 0)])[0] == blk.S_UNSUPP
        assert d.request(blk.T_IN, 0, in_=[512])[1] == pattern(512)
        assert d.dev.statistics()["io_errors"] == 1
    finally:
        d.close()
    assert image.read_bytes()[:512] == pattern(512)


@pytest.mark.parametrize(("sector", "length"), [(SIZE // 512, 512), (SIZE // 512 - 1, 1024),
                                                (0, 100), (2**63, 512)])
def test_out_of_range_or_unaligned_is_ioerr(disk, sector, length):
    assert disk.request(blk.T_IN, sector, in_=[length])[0] == blk.S_IOERR
    assert disk.request(blk.T_OUT, sector, out=[bytes(length)])[0] == blk.S_IOERR
    assert not disk.dev.broken


def test_unknown_request_type_is_unsupp(disk):
    assert disk.request(99, in_=[16])[0] == blk.S_UNSUPP


@pytest.mark.parametrize("shape", ["no-status", "short-header"])
def test_malformed_request_is_a_device_error(disk, shape):
    if shape == "no-status":
        disk.q.add_sgs([struct.pack("<IIQ", blk.T_IN, 0, 0)], [])
    else:
        disk.q.add_sgs([b"\0" * 8], [513])
    disk.q.kick()
    assert disk.dev.broken and disk.drv.status & spec.STATUS_DEVICE_NEEDS_RESET


def test_many_requests_in_flight_coalesce_interrupts(disk):
    reqs = [disk.q.add_sgs([struct.pack("<IIQ", blk.T_IN, 0, i)], [512, 1]) for i in range(64)]
    disk.q.kick()
    done = disk.wait(count=64)
    assert {r.head for r in done} == {r.head for r in reqs}
    for r in reqs:
        sector = struct.unpack_from("<Q", disk.memory.read(r.out[0][0], 16), 8)[0]
        assert r.data() == pattern(SIZE)[sector * 512:(sector + 1) * 512] + b"\0"
    assert disk.dev.statistics()["interrupts"] <= 64


def test_two_queues(image):
    d = Disk(image, num_queues=2)
    try:
        assert d.dev.driver_features >> blk.VIRTIO_BLK_F_MQ & 1
        assert struct.unpack("<H", d.drv.config_bytes(34, 2))[0] == 2
        for q in d.queues:
            assert d.request(blk.T_IN, 1, in_=[512], q=q)[1] == pattern(SIZE)[512:1024]
    finally:
        d.close()


def test_backing_chain(tmp_path, image):
    top = tmp_path / "top.qcow2"
    create_image("qcow2", str(top), SIZE, backing_file=str(image), backing_fmt="raw")
    d = Disk(top, format="qcow2")
    try:
        assert d.request(blk.T_IN, 5, in_=[512])[1] == pattern(SIZE)[5 * 512:6 * 512]
        assert d.request(blk.T_OUT, 5, out=[b"\xAA" * 512])[0] == blk.S_OK
        assert d.request(blk.T_IN, 5, in_=[512])[1] == b"\xAA" * 512
    finally:
        d.close()
    assert image.read_bytes()[5 * 512:6 * 512] == pattern(SIZE)[5 * 512:6 * 512]


def test_reset_with_requests_in_flight(disk):
    disk.dev.inline_reads = False           # every read on a worker: in flight at reset
    for i in range(16):
        disk.q.add_sgs([struct.pack("<IIQ", blk.T_IN, 0, i)], [4096, 1])
    disk.q.kick()
    disk.drv.wr(0x70, 0)  # Status = 0 while workers may still run
    disk.loop.run()
    assert disk.dev.statistics()["inflight"] == 0 and disk.q.used_idx == 0
    disk.drv.alloc = GuestAllocator(RAM + (2 << 20), 1 << 20)
    disk.q = disk.drv.setup()[0]
    assert disk.request(blk.T_IN, 0, in_=[512])[1] == pattern(512)


def test_needs_a_drive():
    with pytest.raises(DeviceError, match="drive"):
        VirtioBlk()
    with pytest.raises(DeviceError):
        VirtioBlk(drive="/nonexistent/disk.img")


class TestBlkConformance(VirtioConformance):
    @pytest.fixture(autouse=True)
    def _image(self, tmp_path):
        self.path = tmp_path / "disk.raw"
        self.path.write_bytes(bytes(SIZE))

    def make_device(self):
        return VirtioBlk(drive=str(self.path), format="raw")

    def sample_buffer(self, queue_index):
        return [struct.pack("<IIQ", blk.T_IN, 0, 0)], [512, 1]


def test_cached_reads_answer_at_once_others_on_a_worker(disk, monkeypatch):
    """A read the host has cached is answered on the machine's thread (preadv2
    RWF_NOWAIT); one that would wait for the disk goes to a worker; same data."""
    before = disk.dev.statistics()["reads_inline"]
    assert disk.request(blk.T_IN, 0, in_=[4096])[1] == pattern(4096)
    assert disk.dev.statistics()["reads_inline"] == before + 1
    # the driver says it would have to wait (not cached): the worker reads it
    monkeypatch.setattr(disk.dev.backend.top, "preadv_nowait", lambda off, bufs: False)
    assert disk.request(blk.T_IN, 8, in_=[4096])[1] == pattern(8192)[4096:]
    stats = disk.dev.statistics()
    assert stats["reads_inline"] == before + 1 and stats["reads"] == 2


def test_raw_preadv_nowait_reads_or_declines(tmp_path):
    """vmforge-raw's preadv_nowait: the data when cached, False past the end of
    the file (zeros are the slow path's) and never an exception."""
    from vmforge.block import BlockBackend

    path = tmp_path / "d.raw"
    path.write_bytes(pattern(8192)[:5000])               # the last sector is partial
    with BlockBackend.open(str(path), "raw") as bb:
        buf = bytearray(4096)
        assert bb.preadv_nowait(0, [memoryview(buf)]) is True
        assert bytes(buf) == pattern(4096)
        assert bb.preadv_nowait(4096, [memoryview(bytearray(1024))]) is False
