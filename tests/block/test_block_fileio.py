"""vmforge.block.fileio: vectored I/O that loops over short transfers and IOV_MAX."""

from __future__ import annotations

import os

from vmforge.block import fileio


def test_short_transfers_and_many_buffers(tmp_path, monkeypatch) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        real_w, real_r = os.pwritev, os.preadv

        def short_w(fd_, bufs, pos):  # at most 7 bytes per call
            first = memoryview(bufs[0])[:7]
            return real_w(fd_, [first], pos)

        def short_r(fd_, bufs, pos):
            first = memoryview(bufs[0])[:5]
            return real_r(fd_, [first], pos)

        data = [memoryview(bytes([i % 251]) * (i % 13 + 1)) for i in range(3000)]
        expect = b"".join(bytes(b) for b in data)
        monkeypatch.setattr(os, "pwritev", short_w)
        assert fileio.pwritev_full(fd, 100, data) == 100 + len(expect)
        monkeypatch.setattr(os, "pwritev", real_w)
        outs = [bytearray(17) for _ in range(len(expect) // 17 + 2)]  # runs past the end
        monkeypatch.setattr(os, "preadv", short_r)
        got = fileio.preadv_full(fd, 100, [memoryview(b) for b in outs])
        assert got == len(expect)
        joined = b"".join(outs)
        assert joined[:len(expect)] == expect
        assert joined[len(expect):] == bytes(len(joined) - len(expect)), "past EOF reads zeros"
        assert os.pread(fd, 100, 0) == bytes(100)
    finally:
        os.close(fd)


def test_over_iov_max_in_one_call(tmp_path) -> None:
    fd = os.open(tmp_path / "g", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        bufs = [memoryview(b"ab") for _ in range(fileio.IOV_MAX * 2 + 3)]
        end = fileio.pwritev_full(fd, 0, bufs)
        assert end == 2 * len(bufs) and os.pread(fd, end, 0) == b"ab" * len(bufs)
        outs = [bytearray(3) for _ in range(fileio.IOV_MAX * 2 + 10)]  # more than the file
        assert fileio.preadv_full(fd, 1, [memoryview(o) for o in outs]) == end - 1
        joined = b"".join(outs)
        assert joined[:end - 1] == (b"ab" * len(bufs))[1:] and not any(joined[end - 1:])
    finally:
        os.close(fd)


def test_padded_puts_data_between_zeros_without_copying() -> None:
    data = memoryview(bytearray(b"xyz" * 1000))
    size = (3 << 20) + 17                      # more zeros than the shared buffer holds
    parts = fileio.padded(size, (2 << 20) + 5, data)
    assert sum(p.nbytes for p in parts) == size
    joined = b"".join(bytes(p) for p in parts)
    assert joined == bytes((2 << 20) + 5) + bytes(data) + bytes(size - (2 << 20) - 5 - 3000)
    assert any(p.obj is data.obj for p in parts), "the caller's buffer itself, not a copy"
    assert [p.nbytes for p in fileio.padded(4096, 0, memoryview(bytes(4096)))] == [4096]
    assert fileio.zero_views(0) == []


def test_page_aligned_buffer_is_private_memory_on_a_page_boundary() -> None:
    import ctypes

    buf = fileio.page_aligned_buffer(1 << 20)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert addr % os.sysconf("SC_PAGE_SIZE") == 0
        assert bytes(buf[:4096]) == bytes(4096)
        buf[:3] = b"abc"
        with open("/proc/self/maps") as maps:
            line = next(ln for ln in maps
                        if int(ln.split("-")[0], 16) <= addr < int(ln.split()[0].split("-")[1], 16))
        # "rw-p": private anonymous pages, not "rw-s" (shmem: dearer to fault and free)
        assert line.split()[1] == "rw-p"
    finally:
        buf.close()
