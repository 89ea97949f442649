"""ns16550a register semantics, through an AddressSpace as a guest sees them."""

from __future__ import annotations

import random
import threading
from importlib.metadata import entry_points

import pytest

from vmforge.chardev import BufferChar, NullChar
from vmforge.device import DeviceError
from vmforge.memory import AddressSpace
from vmforge_serial import Ns16550a
from vmforge_serial import regs as r

POWER_ON = {r.IER: 0x00, r.IIR: 0x01, r.LCR: 0x00, r.MCR: 0x08, r.LSR: 0x60,
            r.MSR: 0xB0, r.SCR: 0x00}


def power_on_values(g) -> dict[int, int]:
    return {reg: g.rd(reg) for reg in POWER_ON}


def enable_fifo(g, trigger: int = 0x00) -> None:
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | trigger)


# -- power-on and reset ---------------------------------------------------------------


def test_power_on_values(guest) -> None:
    assert power_on_values(guest) == POWER_ON
    assert not guest.uart.irq.level
    guest.wr(r.LCR, r.LCR_DLAB)
    assert (guest.rd(r.DLL), guest.rd(r.DLM)) == (0x0C, 0x00)


def test_reset_restores_power_on_values(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, 0x0F)
    guest.chardev.feed(b"abc")  # into the FIFO: reset discards it, as hardware does
    guest.wr(r.MCR, 0x1F)
    guest.wr(r.SCR, 0x5A)
    guest.uart.set_modem_lines(cts=False)
    assert guest.irq.level
    guest.wr(r.LCR, 0x9B)
    guest.uart.reset()
    assert power_on_values(guest) == POWER_ON
    assert not guest.irq.level
    assert guest.uart.rx_level == 0


def test_reset_hands_over_input_that_was_waiting(guest) -> None:
    guest.chardev.feed(b"xy")  # no FIFO yet: 'x' in RBR, 'y' queued in the back-end
    assert guest.chardev.pending_input == 1
    guest.uart.reset()
    assert guest.rd(r.LSR) & r.LSR_DR
    assert guest.rd(r.RBR) == ord("y")


# -- DLAB, scratch, plain registers ------------------------------------------------------


def test_dlab_switches_offsets_0_and_1_to_the_divisor(guest) -> None:
    guest.wr(r.IER, 0x05)
    guest.wr(r.LCR, r.LCR_DLAB | 0x03)
    guest.wr(r.DLL, 0x34)
    guest.wr(r.DLM, 0x12)
    assert (guest.rd(r.DLL), guest.rd(r.DLM)) == (0x34, 0x12)
    assert guest.uart.divisor == 0x1234
    assert guest.chardev.output == b""  # DLL write is not a THR write
    guest.wr(r.LCR, 0x03)
    assert guest.rd(r.IER) == 0x05  # IER untouched by the DLM write
    assert guest.rd(r.LCR) == 0x03
    guest.wr(r.THR, ord("A"))
    assert guest.chardev.output == b"A"
    assert guest.uart.divisor == 0x1234


def test_ier_keeps_four_bits_and_scratch_keeps_eight(guest) -> None:
    guest.wr(r.IER, 0xF0)
    assert guest.rd(r.IER) == 0x00
    guest.wr(r.IER, 0xFF)
    assert guest.rd(r.IER) == 0x0F
    for value in (0x00, 0xA5, 0xFF):
        guest.wr(r.SCR, value)
        assert guest.rd(r.SCR) == value


def test_lsr_and_msr_ignore_writes(guest) -> None:
    guest.wr(r.LSR, 0x00)
    guest.wr(r.MSR, 0x00)
    assert guest.rd(r.LSR) == 0x60
    assert guest.rd(r.MSR) == 0xB0


# -- transmit and THRE ------------------------------------------------------------------


def test_transmit_is_immediate_and_status_bits_stay_right(guest) -> None:
    for i, ch in enumerate(b"hello"):
        assert guest.rd(r.LSR) & (r.LSR_THRE | r.LSR_TEMT) == r.LSR_THRE | r.LSR_TEMT
        guest.wr(r.THR, ch)
        assert guest.chardev.output == b"hello"[: i + 1]
    enable_fifo(guest)
    guest.wr(r.THR, ord("!"))
    assert guest.chardev.output == b"hello!"
    assert guest.rd(r.LSR) == 0x60


def test_wide_register_access_uses_the_low_byte(make_guest) -> None:
    g = make_guest(regshift=2, width=4)
    g.wr(r.THR, 0xFFFF_FF41)
    assert g.chardev.output == b"A"
    g.wr(r.SCR, 0x1234_5678)
    assert g.rd(r.SCR) == 0x78


def test_thre_interrupt_follows_qemu(guest) -> None:
    rec = guest.irq
    guest.wr(r.IER, r.IER_THRI)  # enabling ETBEI with THR empty raises THRE
    assert rec.take() == [True]
    assert guest.rd(r.IIR) == 0x02
    assert rec.take() == [False]  # reading IIR when THRE is the source clears it
    assert guest.rd(r.IIR) == 0x01
    guest.wr(r.THR, ord("a"))  # THR write clears it; the byte leaves; THRE again
    assert rec.take() == [True]
    assert guest.rd(r.IIR) == 0x02
    guest.wr(r.THR, ord("b"))  # pending when written: the line drops and rises
    assert rec.take() == [False, True]
    guest.wr(r.IER, 0)
    assert rec.take() == [False]
    guest.wr(r.IER, r.IER_THRI)  # Windows' toggle: re-raised while THR is empty
    assert rec.take() == [True]
    guest.wr(r.IER, r.IER_THRI)  # unchanged IER: no new edge
    assert rec.take() == []
    assert guest.chardev.output == b"ab"


def test_a_polled_console_moves_no_line_and_leaves_thre_pending(guest) -> None:
    # Linux's console: IER 0, LSR read before each byte (the device's short path)
    rec = guest.irq
    guest.wr(r.IER, r.IER_THRI)
    assert rec.take() == [True]
    guest.wr(r.IER, 0)
    assert rec.take() == [False]
    for ch in b"log line\n":
        assert guest.rd(r.LSR) == 0x60
        guest.wr(r.THR, ch)
    assert rec.take() == []
    assert guest.rd(r.IIR) == 0x01
    guest.chardev.feed(b"k")             # a byte waiting: DR along with THRE and TEMT
    assert guest.rd(r.LSR) == 0x61
    guest.wr(r.IER, r.IER_THRI)          # THR empty all along: THRE at once
    assert rec.take() == [True]
    assert guest.rd(r.IIR) == 0x02
    assert guest.chardev.output == b"log line\n"


def test_reading_iir_clears_thre_only_when_it_is_the_source(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, r.IER_THRI | r.IER_RDI)
    guest.chardev.feed(b"z")
    assert guest.rd(r.IIR) == 0xC4  # data available outranks THRE
    assert guest.rd(r.IIR) == 0xC4
    assert guest.rd(r.RBR) == ord("z")
    assert guest.rd(r.IIR) == 0xC2  # THRE was still pending underneath
    assert guest.rd(r.IIR) == 0xC1
    assert not guest.irq.level


def test_fifo_transmit_reset_rearms_thre(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, r.IER_THRI)
    guest.rd(r.IIR)
    assert not guest.irq.level
    guest.wr(r.FCR, r.FCR_ENABLE_FIFO | r.FCR_CLEAR_XMIT)
    assert guest.irq.level and guest.rd(r.IIR) == 0xC2


# -- FIFO control -------------------------------------------------------------------------


def test_iir_fifo_bits_follow_fcr(guest) -> None:
    assert guest.rd(r.IIR) & 0xC0 == 0
    enable_fifo(guest)
    assert guest.rd(r.IIR) == 0xC1
    guest.wr(r.FCR, 0x00)
    assert guest.rd(r.IIR) == 0x01


def test_fcr_receive_reset_empties_the_fifo(guest) -> None:
    enable_fifo(guest)
    guest.chardev.feed(b"abcdef")
    assert guest.uart.rx_level == 6
    guest.wr(r.FCR, r.FCR_ENABLE_FIFO | r.FCR_CLEAR_RCVR)
    assert guest.uart.rx_level == 0
    assert guest.rd(r.LSR) & r.LSR_DR == 0
    assert guest.rd(r.FCR) & 0xC0 == 0xC0  # reset bits do not stick; FIFO stays on


def test_toggling_fifo_enable_flushes(guest) -> None:
    enable_fifo(guest)
    guest.chardev.feed(b"abc")
    guest.wr(r.FCR, 0)  # disable: flush; the back-end had nothing more queued
    assert guest.rd(r.LSR) & r.LSR_DR == 0
    assert guest.rd(r.IIR) == 0x01


@pytest.mark.parametrize(("fcr", "level"), [(0x00, 1), (0x40, 4), (0x80, 8), (0xC0, 14)])
def test_receive_trigger_levels(guest, fcr: int, level: int) -> None:
    enable_fifo(guest, fcr)
    guest.wr(r.IER, r.IER_RDI)
    assert guest.uart.trigger_level == level
    if level > 1:
        guest.chardev.feed(b"x" * (level - 1))
        assert guest.irq.level
        assert guest.rd(r.IIR) == 0xCC  # below the trigger: character timeout
    guest.chardev.feed(b"x")
    assert guest.rd(r.IIR) == 0xC4  # at the trigger: received data available
    assert guest.irq.level
    for _ in range(level):
        guest.rd(r.RBR)
    assert guest.rd(r.IIR) == 0xC1
    assert not guest.irq.level


def test_receive_without_rdi_enabled_raises_nothing(guest) -> None:
    enable_fifo(guest)
    guest.chardev.feed(b"hello")
    assert guest.irq.events == []
    assert guest.rd(r.IIR) == 0xC1
    assert guest.rd(r.LSR) & r.LSR_DR


def test_non_fifo_mode_holds_one_byte_and_takes_the_rest_in_order(guest) -> None:
    guest.wr(r.IER, r.IER_RDI)
    guest.chardev.feed(b"12345")
    assert guest.uart.rx_level == 1
    assert guest.chardev.pending_input == 4
    assert guest.rd(r.IIR) == 0x04
    got = bytearray()
    while guest.rd(r.LSR) & r.LSR_DR:
        got.append(guest.rd(r.RBR))
    assert bytes(got) == b"12345"
    assert guest.rd(r.LSR) & r.LSR_OE == 0
    assert guest.rd(r.RBR) == ord("5")  # the 16450 holding register keeps its byte


def test_empty_fifo_reads_zero(guest) -> None:
    enable_fifo(guest)
    assert guest.rd(r.RBR) == 0


# -- flow control -------------------------------------------------------------------------


def test_flow_control_delivers_more_than_a_fifo_in_order(guest) -> None:
    enable_fifo(guest)
    data = bytes(random.Random(7).randrange(256) for _ in range(1000))
    guest.chardev.feed(data)
    assert guest.uart.rx_level == 16
    assert guest.chardev.pending_input == 1000 - 16
    got = bytearray()
    while guest.rd(r.LSR) & r.LSR_DR:
        got.append(guest.rd(r.RBR))
    assert bytes(got) == data
    assert guest.chardev.pending_input == 0


def test_flow_control_with_input_from_another_thread(guest) -> None:
    enable_fifo(guest)
    chunks = [bytes([i % 251]) * (i % 40 + 1) for i in range(200)]
    expected = b"".join(chunks)

    def feeder() -> None:
        for chunk in chunks:
            guest.chardev.feed(chunk)

    thread = threading.Thread(target=feeder)
    thread.start()
    got = bytearray()
    while len(got) < len(expected):
        if guest.rd(r.LSR) & r.LSR_DR:
            got.append(guest.rd(r.RBR))
        elif not thread.is_alive() and guest.chardev.pending_input == 0 \
                and not guest.rd(r.LSR) & r.LSR_DR:
            break
    thread.join()
    assert bytes(got) == expected
    assert guest.rd(r.LSR) & r.LSR_OE == 0


# -- errors, overrun, break ----------------------------------------------------------------


def test_overrun_sets_oe_and_keeps_the_fifo(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, r.IER_RLSI)
    guest.wr(r.MCR, r.MCR_LOOP)
    for ch in b"0123456789abcdefXYZ":  # 19 bytes into a 16-byte FIFO
        guest.wr(r.THR, ch)
    assert guest.irq.level
    assert guest.rd(r.IIR) == 0xC6
    lsr = guest.rd(r.LSR)
    assert lsr & (r.LSR_OE | r.LSR_DR) == r.LSR_OE | r.LSR_DR
    assert guest.rd(r.LSR) & r.LSR_OE == 0  # cleared by the read
    assert not guest.irq.level
    got = bytes(guest.rd(r.RBR) for _ in range(16))
    assert got == b"0123456789abcdef"
    assert guest.rd(r.LSR) & r.LSR_DR == 0
    assert guest.chardev.output == b""  # loopback sends nothing out


def test_overrun_in_non_fifo_mode_overwrites_the_holding_register(guest) -> None:
    guest.wr(r.MCR, r.MCR_LOOP)
    guest.wr(r.THR, ord("a"))
    guest.wr(r.THR, ord("b"))
    assert guest.rd(r.LSR) & (r.LSR_OE | r.LSR_DR) == r.LSR_OE | r.LSR_DR
    assert guest.rd(r.RBR) == ord("b")


def test_break_reads_as_nul_with_bi(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, r.IER_RLSI | r.IER_RDI)
    guest.chardev.feed(b"a")
    guest.chardev.send_break()
    guest.chardev.feed(b"b")
    assert guest.rd(r.IIR) == 0xC4  # the break is not at the top yet
    lsr = guest.rd(r.LSR)
    assert lsr & (r.LSR_BI | r.LSR_DR) == r.LSR_DR
    assert lsr & r.LSR_FIFOE  # an error is waiting in the FIFO
    assert guest.rd(r.RBR) == ord("a")
    assert guest.rd(r.IIR) == 0xC6  # now it is: line status
    assert guest.rd(r.LSR) & (r.LSR_BI | r.LSR_DR) == r.LSR_BI | r.LSR_DR
    assert guest.rd(r.LSR) & r.LSR_BI == 0  # cleared by reading LSR
    assert guest.rd(r.RBR) == 0
    assert guest.rd(r.RBR) == ord("b")
    assert guest.rd(r.LSR) & (r.LSR_FIFOE | r.LSR_DR) == 0


def test_parity_and_framing_errors_belong_to_their_byte(guest) -> None:
    enable_fifo(guest)
    guest.chardev.feed(b"ok")
    guest.uart.inject_rx_error(ord("?"), parity=True)
    guest.uart.inject_rx_error(ord("!"), framing=True)
    seen = []
    while (lsr := guest.rd(r.LSR)) & r.LSR_DR:
        seen.append((guest.rd(r.RBR), lsr & (r.LSR_PE | r.LSR_FE)))
    assert seen == [(ord("o"), 0), (ord("k"), 0), (ord("?"), r.LSR_PE), (ord("!"), r.LSR_FE)]


# -- interrupt priorities -------------------------------------------------------------------


def test_interrupt_priorities(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.IER, 0x0F)
    guest.rd(r.IIR)  # acknowledge the THRE raised by enabling ETBEI
    guest.wr(r.IER, 0x0D)
    guest.wr(r.IER, 0x0F)  # ... and raise it again
    guest.uart.set_modem_lines(dcd=False)  # MSI
    guest.chardev.feed(b"d")  # RDA (trigger level 1)
    guest.uart.inject_rx_error(0, overrun=True)  # RLS
    order = []
    for ack in (r.LSR, r.RBR, r.RBR, r.IIR, r.MSR):
        order.append(guest.rd(r.IIR) & 0x0F)
        guest.rd(ack)
    order.append(guest.rd(r.IIR) & 0x0F)
    assert order == [r.IIR_RLSI, r.IIR_RDI, r.IIR_RDI, r.IIR_THRI, r.IIR_MSI, r.IIR_NO_INT]
    assert not guest.irq.level


# -- modem status and loopback ----------------------------------------------------------------


def test_msr_deltas_clear_on_read_and_raise_msi(guest) -> None:
    guest.wr(r.IER, r.IER_MSI)
    assert not guest.irq.level
    guest.uart.set_modem_lines(cts=False, ri=True)
    assert guest.irq.level
    assert guest.rd(r.IIR) == 0x00
    assert guest.rd(r.MSR) == r.MSR_DSR | r.MSR_DCD | r.MSR_RI | r.MSR_DCTS
    assert not guest.irq.level
    assert guest.rd(r.MSR) == r.MSR_DSR | r.MSR_DCD | r.MSR_RI
    guest.uart.set_modem_lines(ri=False)  # trailing edge of RI
    assert guest.rd(r.MSR) == r.MSR_DSR | r.MSR_DCD | r.MSR_TERI
    guest.uart.set_modem_lines(ri=True)  # a leading edge sets no delta
    assert guest.rd(r.MSR) & r.MSR_ANY_DELTA == 0


def test_loopback_mirrors_mcr_into_msr(guest) -> None:
    guest.wr(r.MCR, r.MCR_LOOP | r.MCR_OUT2 | r.MCR_RTS)  # Linux's existence test
    assert guest.rd(r.MSR) & 0xF0 == r.MSR_DCD | r.MSR_CTS
    guest.wr(r.MCR, r.MCR_LOOP | r.MCR_DTR | r.MCR_OUT1)
    msr = guest.rd(r.MSR)
    assert msr & 0xF0 == r.MSR_DSR | r.MSR_RI
    assert msr & r.MSR_ANY_DELTA == r.MSR_DCTS | r.MSR_DDSR | r.MSR_DDCD
    guest.wr(r.MCR, r.MCR_LOOP | r.MCR_DTR)  # RI (from OUT1) falls
    assert guest.rd(r.MSR) == r.MSR_DSR | r.MSR_TERI
    guest.wr(r.MCR, r.MCR_OUT2)
    assert guest.rd(r.MSR) & 0xF0 == 0xB0  # the cable's lines again


def test_loopback_holds_host_input_back_until_it_ends(guest) -> None:
    enable_fifo(guest)
    guest.wr(r.MCR, r.MCR_LOOP)
    guest.chardev.feed(b"host")
    assert guest.rd(r.LSR) & r.LSR_DR == 0
    guest.wr(r.THR, ord("L"))
    assert guest.rd(r.RBR) == ord("L")
    assert guest.chardev.output == b""
    guest.wr(r.MCR, r.MCR_OUT2)
    got = bytes(guest.rd(r.RBR) for _ in range(4))
    assert got == b"host"
    guest.wr(r.THR, ord("T"))
    assert guest.chardev.output == b"T"


# -- robustness ----------------------------------------------------------------------------


@pytest.mark.parametrize("regshift", [0, 2])
def test_any_offset_and_size_is_harmless(make_guest, regshift: int) -> None:
    g = make_guest(regshift=regshift)
    rng = random.Random(regshift)
    for _ in range(3000):
        size = rng.choice((1, 2, 4, 8))
        offset = rng.randrange(0x100) & ~(size - 1)
        if rng.random() < 0.5:
            g.space.write(0x1000_0000 + offset, size, rng.getrandbits(64))
        else:
            value = g.space.read(0x1000_0000 + offset, size)
            assert 0 <= value <= 0xFF  # one 8-bit register per access
    g.uart.reset()
    assert power_on_values(g) == POWER_ON


def test_offsets_past_the_registers_do_nothing(guest) -> None:
    for offset in (8, 9, 0x10, 0xFF):
        guest.space.write(0x1000_0000 + offset, 1, 0x41)  # e.g. OpenSBI's MDR1 at 8
        assert guest.space.read(0x1000_0000 + offset, 1) == 0
    assert guest.chardev.output == b""
    assert power_on_values(guest) == POWER_ON


def test_direct_calls_with_nonsense_arguments_are_harmless() -> None:
    uart = Ns16550a()
    uart.write(r.SCR, 1, 0x33)
    for offset in (-1, -8, 1 << 40):
        assert uart.read(offset, 1) == 0
        uart.write(offset, 1, -1)
    uart.write(r.SCR, 1, -1)
    assert uart.read(r.SCR, 1) == 0xFF


def test_regshift_2_byte_lanes_above_the_register_are_dead(make_guest) -> None:
    g = make_guest(regshift=2, width=1)
    g.space.write(0x1000_0000 + 1, 1, 0x41)  # lane 1 of THR
    assert g.chardev.output == b""
    g.wr(r.SCR, 0x77)
    assert g.space.read(0x1000_0000 + (r.SCR << 2), 1) == 0x77
    assert g.space.read(0x1000_0000 + (r.SCR << 2) + 1, 1) == 0
    assert g.space.read(0x1000_0000 + (r.SCR << 2), 4) == 0x77


# -- configuration and registration -----------------------------------------------------------


def test_properties_and_chardev_argument() -> None:
    uart = Ns16550a(regshift="2", fifo_size=64)
    assert (uart.regshift, uart.fifo_size) == (2, 64)
    assert isinstance(uart.chardev, NullChar)
    uart.write(0, 1, 0x41)  # a NullChar swallows output
    with pytest.raises(DeviceError, match="regshift"):
        Ns16550a(regshift=6)
    with pytest.raises(DeviceError, match="fifo_size"):
        Ns16550a(fifo_size=0)
    with pytest.raises(DeviceError, match="no property"):
        Ns16550a(baud=9600)
    made = Ns16550a(chardev="null")
    assert isinstance(made.chardev, NullChar)
    null = made.chardev
    made.unrealize()  # a back-end the device made from a string is its to close
    assert null.closed


def test_device_made_file_chardev_is_closed_and_flushed(tmp_path) -> None:
    path = tmp_path / "console.log"
    uart = Ns16550a(chardev=f"file:{path}")
    for ch in b"no newline":
        uart.write(r.THR, 1, ch)
    uart.set_chardev(None)  # replaced: the file is closed, so flushed
    assert path.read_bytes() == b"no newline"


def test_larger_fifo_property(make_guest) -> None:
    g = make_guest(fifo_size=64)
    enable_fifo(g)
    g.chardev.feed(bytes(100))
    assert g.uart.rx_level == 64


def test_set_chardev_moves_input_and_output() -> None:
    first, second = BufferChar(), BufferChar()
    uart = Ns16550a(chardev=first)
    uart.write(0, 1, ord("1"))
    uart.set_chardev(second)
    uart.write(0, 1, ord("2"))
    assert (first.output, second.output) == (b"1", b"2")
    first.feed(b"x")
    assert uart.read(r.LSR, 1) & r.LSR_DR == 0  # the old back-end is detached
    second.feed(b"y")
    assert uart.read(r.RBR, 1) == ord("y")
    uart.unrealize()
    second.feed(b"z")
    assert second.pending_input == 1
    assert not first.closed and not second.closed  # the caller's back-ends stay open


def test_host_input_wakes_a_realized_machine() -> None:
    class Board:
        kicks = 0

        def kick(self) -> None:
            self.kicks += 1

    board = Board()
    chardev = BufferChar()
    uart = Ns16550a(chardev=chardev)
    chardev.feed(b"a")
    assert board.kicks == 0
    uart.realize(board)
    chardev.feed(b"b")  # queued: the holding register is full
    assert board.kicks == 0
    uart.read(r.RBR, 1)  # room: 'b' moves in and the machine is woken
    assert board.kicks == 1
    chardev.send_break()
    uart.read(r.RBR, 1)
    assert board.kicks == 2
    uart.unrealize()
    assert not uart.realized


def test_mapped_window_and_entry_point() -> None:
    uart = Ns16550a()
    space = AddressSpace()
    uart.map(space, 0x1000_0000)
    assert [(reg.base, reg.size, reg.name) for reg in space.regions()] == \
        [(0x1000_0000, 0x100, "ns16550a")]
    (ep,) = [e for e in entry_points(group="vmforge.device") if e.name == "ns16550a"]
    assert ep.load() is Ns16550a
    assert ep.dist is not None and ep.dist.name == "vmforge-serial"
    from vmforge.plugins import registry

    assert registry().load("device", "ns16550a") is Ns16550a
