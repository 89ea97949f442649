"""The dirty log of guest RAM (live migration's pre-copy): stores from the
interpreter and from compiled code, A/D-bit updates, device writes through a
virtqueue and through ``GuestMemory`` all mark their pages; taking the log
clears it and re-arms the hart's write TLB, so a page written again after a
take is seen again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "riscv"))
from rv_randprog import CODE, DATA, b_type, i_type, r_type, s_type

from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.memory import AddressSpace, GuestMemory
from vmforge.migration.dirty import DirtyLog

PAGES = 24          # the loop stores once in each of these pages of DATA
EBREAK = (0x00100073).to_bytes(4, "little")


def _store_loop() -> bytes:
    """t0 = a1, t3 = a2 trips of: sd t1, 0(t0); t0 += 4096; then ebreak."""
    prog = [
        i_type(0, 12, 0, 28, 0x13),                 # addi t3, a2, 0
        i_type(0, 11, 0, 5, 0x13),                  # addi t0, a1, 0
        # loop:
        s_type(0, 6, 5, 3),                         # sd t1, 0(t0)
        r_type(0, 0, 0x33, 5, 5, 7),                # add t0, t0, t2 (4096)
        i_type(-1, 28, 0, 28, 0x13),                # addi t3, t3, -1
        b_type(-12, 0, 28, 1),                      # bne t3, x0, loop
    ]
    return b"".join(w.to_bytes(4, "little") for w in prog) + EBREAK


def _hart(jit: bool) -> tuple[RiscvHart, AddressSpace]:
    space = AddressSpace()
    space.add_ram(CODE, 1 << 20)
    space.add_ram(DATA, PAGES << 12)
    space.memory.load(CODE, _store_loop())
    hart = RiscvHart(space, pc=CODE, stop_on={3})
    hart.jit = jit
    hart.x[7] = 4096
    hart.x[11] = DATA + 8
    return hart, space


def _run(hart: RiscvHart, trips: int) -> None:
    hart.x[12] = trips
    hart.pc = CODE
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_hart_stores_are_logged_and_relogged_after_a_take(jit):
    hart, space = _hart(jit)
    mem = space.memory
    # warm up with the log off: the write TLB holds every DATA page without a flag,
    # and (jit) the loop is compiled
    for _ in range(30):
        _run(hart, PAGES)
    log = DirtyLog(mem)
    log.start()
    hart.x[6] = 0x1111
    _run(hart, PAGES)
    dirty = log.take()
    data_pages = {DATA + (i << 12) for i in range(PAGES)}
    assert data_pages <= set(dirty), sorted(data_pages - set(dirty))
    # taken: clean again; half the pages written again are seen again
    hart.x[11] = DATA + 8 + (PAGES // 2 << 12)
    _run(hart, PAGES // 2)
    again = set(log.take())
    assert {DATA + (i << 12) for i in range(PAGES // 2, PAGES)} <= again
    assert not again & {DATA + (i << 12) for i in range(PAGES // 2)}
    log.stop()
    if jit:
        assert hart._stats()["jit_regions"] > 0


def test_log_off_leaves_no_flag_and_marks_nothing():
    hart, space = _hart(True)
    log = DirtyLog(space.memory)
    log.start()
    log.stop()
    _run(hart, PAGES)
    log.start()
    assert log.take() == []
    log.stop()


def test_page_table_walk_marks_the_accessed_and_dirty_bits():
    """Sv39 with A/D clear: the walk sets them, which writes the page table page."""
    space = AddressSpace()
    space.add_ram(CODE, 4 << 20)
    mem = space.memory
    root = CODE + (1 << 20)
    # one 1 GiB leaf mapping va 0x80000000 -> pa 0x80000000, V R W X, A/D clear
    mem.write_u64(root + 2 * 8, (CODE >> 12) << 10 | 0xF)
    hart = RiscvHart(space, pc=CODE, stop_on={3})
    mem.load(CODE, i_type(0, 0, 0, 0, 0x13).to_bytes(4, "little") + EBREAK)
    log = DirtyLog(mem)
    log.start()
    hart.set_csr("satp", 8 << 60 | root >> 12)
    hart.priv = 1
    res = hart.run()
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert root in log.take()


def test_guest_memory_writes_are_logged():
    mem = GuestMemory()
    mem.add_ram(0x8000_0000, 1 << 20)
    log = DirtyLog(mem)
    mem.write(0x8000_0000, b"before")
    log.start()
    mem.write(0x8000_3ffe, b"abcd")       # two pages
    assert log.take() == [0x8000_3000, 0x8000_4000]
    assert log.take() == []


@pytest.mark.parametrize("mode", ["split", "packed"])
def test_virtqueue_completion_marks_the_buffers_and_the_ring(mode):
    """A device writes a chain's writable part through memoryviews (no GuestMemory
    call): its pages, and the used ring's, are in the log once the chain is pushed."""
    from vmforge.testing.virtio_driver import GuestAllocator
    from vmforge.testing.virtio_kit import ALL_RING_MODES, RAM, RAM_SIZE, guest_memory, make

    mem = guest_memory()
    alloc = GuestAllocator(RAM, RAM_SIZE)
    modes = {k: v for k, v in ALL_RING_MODES.items() if mode in k}
    _dev, _t, _drv, queues = make(mem, alloc, **next(iter(modes.values())))
    q = queues[0]
    buf = alloc.alloc(3 * 4096, 4096) + 4096
    log = DirtyLog(mem)
    log.start()
    req = q.add_sgs([b"0123456789abcdef"], [(buf + 4096 - 4, 12)])
    log.take()                         # the driver's own writes: not the device's
    q.kick()
    assert q.get_buf() is req and req.written
    dirty = set(log.take())
    assert {buf, buf + 4096} <= dirty, sorted(hex(p) for p in dirty)
    ring_pages = dirty - {buf, buf + 4096}
    assert ring_pages, "the used ring's page is not in the log"
    log.stop()


@pytest.mark.parametrize("mode", ["split", "packed"])
def test_popping_a_chain_marks_the_event_index_it_writes(mode):
    """With EVENT_IDX the device publishes its avail event when it pops a chain:
    that write must reach the log too, or a destination's driver would not kick."""
    from vmforge.testing.virtio_driver import GuestAllocator
    from vmforge.testing.virtio_kit import ALL_RING_MODES, RAM, RAM_SIZE, guest_memory, make

    mem = guest_memory()
    alloc = GuestAllocator(RAM, RAM_SIZE)
    modes = {k: v for k, v in ALL_RING_MODES.items() if mode in k}
    dev, _t, _drv, queues = make(mem, alloc, **next(iter(modes.values())))
    held: list = []
    dev.on_notify = lambda queue: held.extend(queue.pop_available())
    q = queues[0]
    log = DirtyLog(mem)
    log.start()
    q.add_sgs([b"ping"], [4])
    log.take()
    q.kick()
    assert len(held) == 1 and dev.queues[0].ring.event_idx
    ring = dev.queues[0].ring
    event_at = ring.device_addr if mode == "packed" else ring.device_addr + 4 + 8 * ring.size
    assert event_at & ~0xFFF in log.take()
    log.stop()
