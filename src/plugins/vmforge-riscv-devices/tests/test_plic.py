"""PLIC: registers, claim/complete as Linux's irq-sifive-plic driver does it,
level-triggered sources, contexts for M and S mode on two harts."""

from __future__ import annotations

import pytest

from vmforge.irq import InterruptController
from vmforge_riscv_devices import Plic
from vmforge_riscv_devices.hart import MIP_MEIP, MIP_SEIP
from vmforge_riscv_devices.plic import CONTEXT_BASE, ENABLE_BASE, PENDING_BASE

BASE = 0xC000000  # where the virt board puts it
MEIP, SEIP = MIP_MEIP, MIP_SEIP


def prio(n: int) -> int:
    return BASE + 4 * n


def enable(ctx: int, word: int = 0) -> int:
    return BASE + ENABLE_BASE + 0x80 * ctx + 4 * word


def threshold(ctx: int) -> int:
    return BASE + CONTEXT_BASE + 0x1000 * ctx


def claim(ctx: int) -> int:
    return threshold(ctx) + 4


@pytest.fixture
def rig(board, new_hart):
    plic = Plic(num_harts=2)
    board.add_device(plic, BASE)
    harts = [new_hart(), new_hart()]
    for i, h in enumerate(harts):
        plic.connect_hart(i, h)
    return board.space, plic, harts


def linux_init(space, ctx: int) -> None:
    """plic_init: threshold 0, every source disabled for the context."""
    space.write(threshold(ctx), 4, 0)
    for word in range(3):
        space.write(enable(ctx, word), 4, 0)


def linux_enable(space, ctx: int, irq: int) -> None:
    """plic_irq_enable / unmask: enable bit for the context, priority 1."""
    word = irq // 32
    space.write(enable(ctx, word), 4, space.read(enable(ctx, word), 4) | 1 << (irq % 32))
    space.write(prio(irq), 4, 1)


def linux_handle(space, ctx: int) -> list[int]:
    """plic_handle_irq: claim until 0, completing each (eoi) after handling."""
    seen = []
    while irq := space.read(claim(ctx), 4):
        seen.append(irq)
        space.write(claim(ctx), 4, irq)
    return seen


def test_implements_the_controller_protocol(rig):
    _, plic, _ = rig
    assert isinstance(plic, InterruptController)
    assert plic.line(10) is plic.line(10)
    with pytest.raises(ValueError):
        plic.line(0)
    with pytest.raises(ValueError):
        plic.line(96)


def test_registers_read_back(rig):
    space, _plic, _ = rig
    space.write(prio(10), 4, 5)
    assert space.read(prio(10), 4) == 5
    space.write(prio(10), 4, 0xF)  # 8 levels: WARL, as QEMU
    assert space.read(prio(10), 4) == 7
    space.write(prio(0), 4, 3)  # source 0 does not exist
    assert space.read(prio(0), 4) == 0
    space.write(threshold(3), 4, 6)
    assert space.read(threshold(3), 4) == 6
    space.write(enable(1, 2), 4, 0xFFFFFFFF)
    assert space.read(enable(1, 2), 4) == 0xFFFFFFFF  # sources 64..95
    space.write(enable(1, 0), 4, 0xFFFFFFFF)
    assert space.read(enable(1, 0), 4) == 0xFFFFFFFE  # bit 0: source 0
    assert space.read(enable(1, 3), 4) == 0  # past source 95


def test_linux_flow_uart_on_hart0_m_context(rig):
    space, plic, harts = rig
    linux_init(space, 0)
    linux_enable(space, 0, 10)
    uart = plic.line(10)
    uart.raise_()
    assert harts[0].bit(MEIP) and not harts[0].bit(SEIP) and harts[1].mip == 0
    assert space.read(BASE + PENDING_BASE, 4) == 1 << 10
    assert space.read(claim(0), 4) == 10
    assert not harts[0].bit(MEIP)  # claimed: nothing else to take
    assert space.read(BASE + PENDING_BASE, 4) == 0
    assert space.read(claim(0), 4) == 0  # a claimed source is not pending again
    uart.lower()  # the handler emptied the FIFO
    space.write(claim(0), 4, 10)  # complete
    assert harts[0].mip == 0
    assert space.read(claim(0), 4) == 0


def test_still_asserted_level_pends_again_on_complete(rig):
    space, plic, harts = rig
    linux_init(space, 1)
    linux_enable(space, 1, 5)
    dev = plic.line(5)
    dev.raise_()
    assert harts[0].bit(SEIP)
    assert space.read(claim(1), 4) == 5
    assert not harts[0].bit(SEIP)
    space.write(claim(1), 4, 5)  # complete while the device still asserts
    assert harts[0].bit(SEIP)
    assert space.read(claim(1), 4) == 5
    dev.lower()
    space.write(claim(1), 4, 5)
    assert not harts[0].bit(SEIP)
    assert space.read(BASE + PENDING_BASE, 4) == 0


def test_lowered_before_claim_is_no_longer_pending(rig):
    space, plic, harts = rig
    linux_enable(space, 0, 3)
    plic.set_irq(3, True)
    plic.set_irq(3, False)
    assert harts[0].mip == 0
    assert space.read(claim(0), 4) == 0


def test_priority_order_and_ties(rig):
    space, plic, _ = rig
    for irq, p in ((1, 1), (2, 3), (7, 3), (40, 2)):
        linux_enable(space, 0, irq)
        space.write(prio(irq), 4, p)
        plic.set_irq(irq, True)
    assert space.read(BASE + PENDING_BASE, 4) == 0b10000110
    assert space.read(BASE + PENDING_BASE + 4, 4) == 1 << 8
    order = []
    for _ in range(4):
        irq = space.read(claim(0), 4)
        order.append(irq)
        plic.set_irq(irq, False)
    assert order == [2, 7, 40, 1]  # highest priority first, lowest id on ties
    for irq in order:
        space.write(claim(0), 4, irq)
    assert space.read(claim(0), 4) == 0


def test_threshold_and_priority_zero_mask(rig):
    space, plic, harts = rig
    linux_enable(space, 0, 9)
    space.write(prio(9), 4, 2)
    space.write(threshold(0), 4, 2)
    plic.set_irq(9, True)
    assert not harts[0].bit(MEIP)
    assert space.read(claim(0), 4) == 0
    space.write(threshold(0), 4, 1)
    assert harts[0].bit(MEIP)
    space.write(prio(9), 4, 0)  # priority 0: never
    assert not harts[0].bit(MEIP)


def test_contexts_of_two_harts(rig):
    space, plic, harts = rig
    linux_enable(space, 3, 33)  # hart 1, S mode
    linux_enable(space, 2, 34)  # hart 1, M mode
    plic.set_irq(33, True)
    assert harts[1].bit(SEIP) and not harts[1].bit(MEIP) and harts[0].mip == 0
    plic.set_irq(34, True)
    assert harts[1].bit(MEIP)
    assert space.read(claim(2), 4) == 34
    assert space.read(claim(3), 4) == 33
    # a source enabled in two contexts goes to whoever claims first
    linux_enable(space, 0, 50)
    linux_enable(space, 2, 50)
    plic.set_irq(50, True)
    assert harts[0].bit(MEIP) and harts[1].bit(MEIP)
    assert space.read(claim(0), 4) == 50
    assert not harts[1].bit(MEIP)
    assert space.read(claim(2), 4) == 0


def test_eoi_of_a_masked_source_as_linux_does(rig):
    """Linux's plic_irq_eoi enables a disabled source around the completion."""
    space, plic, harts = rig
    linux_enable(space, 0, 12)
    plic.set_irq(12, True)
    assert space.read(claim(0), 4) == 12
    plic.set_irq(12, False)
    space.write(enable(0), 4, 0)  # masked while in the handler
    space.write(enable(0), 4, 1 << 12)
    space.write(claim(0), 4, 12)
    space.write(enable(0), 4, 0)
    plic.set_irq(12, True)
    assert harts[0].mip == 0
    space.write(enable(0), 4, 1 << 12)
    assert space.read(claim(0), 4) == 12


def test_bad_guest_input_is_ignored(rig):
    space, plic, _harts = rig
    linux_enable(space, 0, 4)
    plic.set_irq(4, True)
    space.write(claim(0), 4, 0)  # complete of source 0
    space.write(claim(0), 4, 4)  # complete of an unclaimed source
    space.write(claim(0), 4, 0xFFFFFFFF)
    space.write(BASE + PENDING_BASE, 4, 0)  # pending is read-only
    assert space.read(BASE + PENDING_BASE, 4) == 1 << 4
    assert space.read(threshold(4), 4) == 0  # no such context (2 harts)
    space.write(threshold(4), 4, 1)
    space.write(BASE + 0x1FFFFC, 4, 1)
    assert space.read(BASE + 0x1FFFFC, 4) == 0
    space.write(threshold(0) + 8, 4, 1)
    assert space.read(threshold(0) + 8, 4) == 0
    assert space.read(claim(0), 1) == 0  # 32-bit registers only: no claim
    assert space.read(BASE + PENDING_BASE, 4) == 1 << 4
    plic.set_irq(0, True)
    plic.set_irq(200, True)
    space.write(threshold(0), 4, 9)  # 8 levels: WARL bits, as QEMU (9 -> 1)
    assert space.read(threshold(0), 4) == 1
    space.write(threshold(0), 4, 8)
    assert space.read(threshold(0), 4) == 0
    assert space.read(claim(0), 4) == 4


def test_reset_clears_state_and_repends_asserted_lines(rig):
    space, plic, harts = rig
    linux_enable(space, 0, 6)
    line = plic.line(6)
    line.raise_()
    assert space.read(claim(0), 4) == 6
    plic.reset()
    assert harts[0].mip == 0
    assert space.read(prio(6), 4) == 0 and space.read(enable(0), 4) == 0
    assert space.read(BASE + PENDING_BASE, 4) == 1 << 6
    linux_enable(space, 0, 6)
    assert harts[0].bit(MEIP)
    assert space.read(claim(0), 4) == 6


def test_linux_handler_loop_drains_every_source(rig):
    space, plic, harts = rig
    linux_init(space, 0)
    for irq in (1, 8, 10, 11):
        linux_enable(space, 0, irq)
    for irq in (1, 8, 11):
        plic.line(irq).pulse()  # edge-like: raised and dropped before the handler
    plic.line(10).raise_()

    def handler_lowering_10():
        seen = []
        while irq := space.read(claim(0), 4):
            seen.append(irq)
            if irq == 10:
                plic.line(10).lower()
            space.write(claim(0), 4, irq)
        return seen

    assert handler_lowering_10() == [10]  # pulses that ended before a claim are gone
    assert harts[0].mip == 0


def test_priorities_not_a_power_of_two_drop_illegal_values(board):
    plic = Plic(num_priorities=5)
    board.add_device(plic, BASE)
    board.space.write(prio(3), 4, 4)
    board.space.write(prio(3), 4, 6)  # above 5: kept at 4, as QEMU
    assert board.space.read(prio(3), 4) == 4


def test_lines_changed_from_another_thread_while_the_hart_claims(rig):
    """A device thread toggles its line while the CPU thread runs Linux's handler:
    no interrupt is lost and nothing stays pending once the line rests low."""
    import threading

    space, plic, harts = rig
    linux_enable(space, 0, 10)
    line = plic.line(10)
    stop = threading.Event()
    handled = 0

    def device() -> None:
        for i in range(20000):
            line.set(i % 3 != 0)
        line.set(False)
        stop.set()

    t = threading.Thread(target=device)
    t.start()
    while not stop.is_set() or harts[0].bit(MEIP):
        handled += len(linux_handle(space, 0))
    t.join()
    assert handled > 0
    assert space.read(BASE + PENDING_BASE, 4) == 0
    assert not plic.claimed and not harts[0].bit(MEIP)
