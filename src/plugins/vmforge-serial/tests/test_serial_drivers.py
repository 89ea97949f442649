"""The ns16550a driven by the register sequences of real guest drivers.

- Linux ``drivers/tty/serial/8250/8250_port.c``: ``autoconfig`` (IER test,
  loopback test, FIFO/EFR/16750/XScale probing), ``serial8250_do_startup``
  (THRE re-assert test, TXEN test), ``set_termios``, and the interrupt handler
  for transmit and receive.
- OpenSBI ``lib/utils/serial/uart8250.c``: init, putc, getc, with the
  register layouts QEMU virt (regshift 0, bytes) and DesignWare boards
  (regshift 2, 32-bit accesses) use.
"""

from __future__ import annotations

import pytest

from vmforge_serial import regs as r

# -- Linux 8250 --------------------------------------------------------------------


def linux_autoconfig(g) -> str:
    """``autoconfig()`` + ``autoconfig_16550a()``: the port type Linux settles on."""
    scratch = g.rd(r.IER)
    g.wr(r.IER, 0)
    scratch2 = g.rd(r.IER) & 0x0F
    g.wr(r.IER, 0x0F)
    scratch3 = g.rd(r.IER) & 0x0F
    g.wr(r.IER, scratch)
    if scratch2 != 0 or scratch3 != 0x0F:
        return "IER test failed"
    save_mcr = g.rd(r.MCR)
    save_lcr = g.rd(r.LCR)
    g.wr(r.MCR, r.MCR_LOOP | r.MCR_OUT2 | r.MCR_RTS)
    status1 = g.rd(r.MSR) & r.MSR_STATUS
    g.wr(r.MCR, save_mcr)
    if status1 != r.MSR_DCD | r.MSR_CTS:
        return f"LOOP test failed ({status1:#x})"
    g.wr(r.LCR, 0xBF)  # UART_LCR_CONF_MODE_B
    g.wr(2, 0)  # UART_EFR
    g.wr(r.LCR, 0)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO)
    kind = g.rd(r.IIR) & 0xC0
    if kind == 0x00:
        port = "8250/16450"
    elif kind == 0x40:
        port = "unknown"
    elif kind == 0x80:
        port = "16550"
    else:
        port = linux_autoconfig_16550a(g)
    g.wr(r.LCR, save_lcr)
    # reset the UART the way autoconfig leaves it
    g.wr(r.MCR, save_mcr)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | r.FCR_CLEAR_RCVR | r.FCR_CLEAR_XMIT)
    g.wr(r.FCR, 0)
    g.rd(r.RBR)
    g.wr(r.IER, 0)
    return port


def linux_autoconfig_16550a(g) -> str:
    g.wr(r.LCR, 0x80)  # UART_LCR_CONF_MODE_A
    if g.rd(2) == 0:  # EFR readable with DLAB: ST16C650V1
        return "ST16C650V1"
    g.wr(r.LCR, 0xBF)
    if g.rd(2) == 0:
        return "EFR UART (ST16C650V2/TI16C752)"
    g.wr(r.LCR, 0)
    status1 = g.rd(r.MCR)
    g.wr(r.LCR, 0xE0)
    status2 = g.rd(2)  # EXCR1 on a NatSemi SuperIO
    if not (status2 ^ status1) & r.MCR_LOOP:
        g.wr(r.LCR, 0)
        g.wr(r.MCR, status1 ^ r.MCR_LOOP)
        g.wr(r.LCR, 0xE0)
        status2 = g.rd(2)
        g.wr(r.LCR, 0)
        g.wr(r.MCR, status1)
        if (status2 ^ status1) & r.MCR_LOOP:
            return "NatSemi SuperIO"
    g.wr(r.LCR, 0)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | 0x20)  # UART_FCR7_64BYTE
    s1 = g.rd(r.IIR) & 0xE0
    g.wr(r.FCR, 0)
    g.wr(r.LCR, 0x80)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | 0x20)
    s2 = g.rd(r.IIR) & 0xE0
    g.wr(r.FCR, 0)
    g.wr(r.LCR, 0)
    if s1 == 0xC0 and s2 == 0xE0:
        return "16750"
    iersave = g.rd(r.IER)
    g.wr(r.IER, iersave & ~0x40)  # UART_IER_UUE
    if not g.rd(r.IER) & 0x40:
        g.wr(r.IER, iersave | 0x40)
        if g.rd(r.IER) & 0x40:
            g.wr(r.IER, iersave)
            return "XScale"
    g.wr(r.IER, iersave)
    return "16550A"


def linux_startup(g) -> dict[str, bool]:
    """``serial8250_do_startup`` then ``set_termios`` (115200 8N1, FIFO trigger 8)."""
    g.wr(r.FCR, r.FCR_ENABLE_FIFO)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | r.FCR_CLEAR_RCVR | r.FCR_CLEAR_XMIT)
    g.wr(r.FCR, 0)
    for reg in (r.LSR, r.RBR, r.IIR, r.MSR):
        g.rd(reg)
    assert g.rd(r.LSR) != 0xFF, "LSR safety check engaged"
    assert g.rd(r.LSR) & r.LSR_THRE  # wait_for_xmitr
    g.wr(r.IER, r.IER_THRI)
    iir1 = g.rd(r.IIR)
    g.wr(r.IER, 0)
    g.wr(r.IER, r.IER_THRI)
    iir = g.rd(r.IIR)
    g.wr(r.IER, 0)
    bug_thre = bool(not iir1 & r.IIR_NO_INT and iir & r.IIR_NO_INT)
    g.wr(r.LCR, 0x03)
    g.wr(r.MCR, r.MCR_OUT2 | r.MCR_RTS | r.MCR_DTR)
    g.wr(r.IER, r.IER_THRI)
    lsr = g.rd(r.LSR)
    iir = g.rd(r.IIR)
    g.wr(r.IER, 0)
    bug_txen = bool(lsr & r.LSR_TEMT and iir & r.IIR_NO_INT)
    for reg in (r.LSR, r.RBR, r.IIR, r.MSR):
        g.rd(reg)
    # set_termios: divisor for 115200 from 1.8432 MHz, 8N1, FIFO with trigger 8
    g.wr(r.LCR, 0x83)
    g.wr(r.DLL, 1)
    g.wr(r.DLM, 0)
    g.wr(r.LCR, 0x03)
    g.wr(r.FCR, r.FCR_ENABLE_FIFO | 0x80)
    g.wr(r.IER, r.IER_RLSI | r.IER_RDI)
    return {"bug_thre": bug_thre, "bug_txen": bug_txen}


def linux_irq_handler(g, tx: bytearray, rx: bytearray) -> bool:
    """``serial8250_handle_irq``: returns False when IIR said no interrupt."""
    iir = g.rd(r.IIR)
    if iir & r.IIR_NO_INT:
        return False
    lsr = g.rd(r.LSR)
    if lsr & (r.LSR_DR | r.LSR_BI):
        for _ in range(256):  # serial8250_rx_chars
            rx.append(g.rd(r.RBR) if lsr & r.LSR_DR else 0)
            lsr = g.rd(r.LSR)
            if not lsr & (r.LSR_DR | r.LSR_BI):
                break
    g.rd(r.MSR)  # serial8250_modem_status
    if lsr & r.LSR_THRE and g.rd(r.IER) & r.IER_THRI:  # serial8250_tx_chars
        for _ in range(16):  # tx_loadsz of a 16550A
            if not tx:
                break
            g.wr(r.THR, tx.pop(0))
        if not tx:
            g.wr(r.IER, g.rd(r.IER) & ~r.IER_THRI)  # __stop_tx
    return True


def run_interrupts(g, tx: bytearray, rx: bytearray, limit: int = 10_000) -> int:
    """Call the handler while the line is high (a level-triggered PLIC would)."""
    calls = 0
    while g.irq.level:
        assert linux_irq_handler(g, tx, rx), "line high but IIR says no interrupt"
        calls += 1
        assert calls < limit, "interrupt storm"
    return calls


@pytest.mark.parametrize(("regshift", "width"), [(0, 1), (2, 4)])
def test_linux_autoconfig_finds_a_16550a(make_guest, regshift: int, width: int) -> None:
    g = make_guest(regshift=regshift, width=width)
    assert linux_autoconfig(g) == "16550A"
    assert g.chardev.output == b""  # probing transmits nothing
    assert not g.irq.level
    assert g.rd(r.LCR) == 0 and g.rd(r.MCR) == r.MCR_OUT2 and g.rd(r.IER) == 0


def test_linux_startup_finds_no_thre_or_txen_bug(guest) -> None:
    assert linux_autoconfig(guest) == "16550A"
    assert linux_startup(guest) == {"bug_thre": False, "bug_txen": False}
    assert guest.rd(r.IIR) == 0xC1  # FIFO on, nothing pending
    assert not guest.irq.level


def test_linux_interrupt_driven_transmit(guest) -> None:
    linux_autoconfig(guest)
    linux_startup(guest)
    message = b"Linux version 6.x (vmforge) #1 SMP\r\n" * 5
    tx = bytearray(message)
    rx = bytearray()
    guest.irq.take()
    guest.wr(r.IER, guest.rd(r.IER) | r.IER_THRI)  # __start_tx
    assert guest.irq.level
    calls = run_interrupts(guest, tx, rx)
    assert guest.chardev.output == message
    assert calls == -(-len(message) // 16)  # 16 bytes per THRE interrupt
    assert not tx and not rx
    assert not guest.irq.level and guest.rd(r.IER) & r.IER_THRI == 0


def test_linux_interrupt_driven_receive_gets_every_byte(guest) -> None:
    linux_autoconfig(guest)
    linux_startup(guest)
    data = bytes(range(256)) * 2
    guest.chardev.feed(data)
    assert guest.irq.level  # 16 bytes in the FIFO >= trigger level 8
    assert guest.rd(r.IIR) == 0xC4
    rx = bytearray()
    run_interrupts(guest, bytearray(), rx)
    assert bytes(rx) == data
    assert guest.rd(r.LSR) & (r.LSR_OE | r.LSR_DR) == 0


def test_linux_receive_below_trigger_level_reports_char_timeout(guest) -> None:
    linux_autoconfig(guest)
    linux_startup(guest)
    guest.chardev.feed(b"ls\r")  # 3 bytes < trigger 8: the character timeout fires
    assert guest.irq.level
    assert guest.rd(r.IIR) == 0xCC
    rx = bytearray()
    run_interrupts(guest, bytearray(), rx)
    assert bytes(rx) == b"ls\r"


# -- OpenSBI uart8250 ------------------------------------------------------------------


def opensbi_init(g, in_freq: int, baudrate: int) -> None:
    bdiv = in_freq // (16 * baudrate)
    g.wr(r.IER, 0x00)
    g.wr(r.LCR, 0x80)
    g.wr(r.DLL, bdiv & 0xFF)
    g.wr(r.DLM, (bdiv >> 8) & 0xFF)
    g.wr(r.LCR, 0x03)
    g.wr(r.FCR, 0x01)
    g.wr(r.MCR, 0x00)
    g.rd(r.LSR)
    g.rd(r.RBR)
    g.wr(r.SCR, 0x00)


def opensbi_putc(g, ch: int) -> None:
    for _ in range(1000):
        if g.rd(r.LSR) & r.LSR_THRE:
            break
    else:
        raise AssertionError("THRE never set")
    g.wr(r.THR, ch)


def opensbi_getc(g) -> int:
    if g.rd(r.LSR) & r.LSR_DR:
        return g.rd(r.RBR)
    return -1


@pytest.mark.parametrize(("regshift", "width", "freq", "baud", "divisor"), [
    (0, 1, 3_686_400, 115_200, 2),  # QEMU virt
    (2, 4, 24_000_000, 115_200, 13),  # a DesignWare APB UART, reg-io-width 4
])
def test_opensbi_console(make_guest, regshift: int, width: int, freq: int, baud: int,
                         divisor: int) -> None:
    g = make_guest(regshift=regshift, width=width)
    opensbi_init(g, freq, baud)
    assert g.uart.divisor == divisor
    g.wr(r.LCR, 0x83)
    assert (g.rd(r.DLL), g.rd(r.DLM)) == (divisor & 0xFF, divisor >> 8)
    g.wr(r.LCR, 0x03)
    banner = b"OpenSBI v1.5\r\n   ____                    _____ ____ _____\r\n"
    for ch in banner:
        opensbi_putc(g, ch)
    assert g.chardev.output == banner
    assert opensbi_getc(g) == -1
    g.chardev.feed(b"y\r" * 20)  # more than the FIFO holds
    got = [opensbi_getc(g) for _ in range(40)]
    assert bytes(got) == b"y\r" * 20
    assert opensbi_getc(g) == -1
    assert not g.irq.events  # OpenSBI polls: IER stays 0, the line never moves


def linux_console_write(g, text: bytes) -> None:
    """``serial8250_console_write``: IER off, poll BOTH_EMPTY per byte, IER back."""
    ier = g.rd(r.IER)
    g.wr(r.IER, 0)
    for ch in text:
        for _ in range(1000):  # wait_for_xmitr(up, UART_LSR_BOTH_EMPTY)
            if g.rd(r.LSR) & (r.LSR_THRE | r.LSR_TEMT) == r.LSR_THRE | r.LSR_TEMT:
                break
        else:
            raise AssertionError("transmitter never empty")
        g.wr(r.THR, ch)
    g.wr(r.IER, ier)


def test_linux_console_write_between_interrupt_driven_io(guest) -> None:
    linux_autoconfig(guest)
    linux_startup(guest)
    guest.irq.take()
    linux_console_write(guest, b"[    0.000000] printk\n")
    assert guest.chardev.output == b"[    0.000000] printk\n"
    assert guest.irq.take() == []  # THRE masked while IER was 0, not raised after
    guest.chardev.feed(b"q" * 9)  # RX interrupts still work afterwards
    rx = bytearray()
    run_interrupts(guest, bytearray(), rx)
    assert bytes(rx) == b"q" * 9
