"""The ns16550a UART: a 16550A with a 16-byte receive FIFO, memory-mapped.

What the guest sees follows QEMU's ``hw/char/serial.c`` (what Linux's 8250
driver and OpenSBI's uart8250 driver already run against), with these
choices where the model has to pick:

- Transmission is immediate: a byte written to THR reaches the character
  back-end during the write, so LSR reads THRE|TEMT again right after it and
  the THRE interrupt is re-armed at once, as in QEMU.
- Input comes from the back-end through ``can_receive``/``receive``;
  ``can_receive`` is the free FIFO space (1 byte without FIFO, 0 in loopback),
  so the host side never overruns the FIFO; what does not fit stays queued in
  the back-end.  OE is still set by loopback or injected overruns.
- No baud timing: the character-timeout interrupt (IIR 0x0C) is pending
  whenever the FIFO holds data below the trigger level, as if four character
  times had passed with no new input.
- Error bits follow the character at the top of the FIFO (PE/FE/BI latch into
  LSR when it gets there, an LSR read clears OE/PE/FE/BI), as the 16550A data
  sheet describes and Linux's ``serial8250_rx_chars`` expects.
- In loopback the modem inputs mirror MCR (RTS->CTS, DTR->DSR, OUT1->RI,
  OUT2->DCD), with delta bits on change, as the data sheet says.
- Register numbers 8 and up (offsets past ``8 << regshift``) read 0 and ignore
  writes; with ``regshift > 0`` only the low byte lane of a register is live.
"""

from __future__ import annotations

import threading
from collections import deque

from vmforge.chardev import CharBackend, NullChar, chardev_from_spec
from vmforge.device import Device, DeviceError, Prop
from vmforge.migration.record import StateError, check_header, get_bool, get_int, header
from vmforge_serial import regs as r

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Ns16550a"]

_MSR_POWER_ON = r.MSR_CTS | r.MSR_DSR | r.MSR_DCD  # QEMU: a cable is plugged in
_DIVISOR_POWER_ON = 0x0C  # 9600 baud from a 1.8432 MHz clock, as QEMU
#: each byte as a one-byte ``bytes``, for the transmitter
_BYTES = tuple(bytes((b,)) for b in range(256))


class Ns16550a(Device):
    """A 16550A-compatible UART (``compatible = "ns16550a"``).

    ``chardev`` is the host end: a :class:`~vmforge.chardev.CharBackend`, a
    QEMU ``-serial`` string such as ``"stdio"``, or None (discard output).
    The interrupt output is :attr:`irq`; the machine connects it to its
    interrupt controller.
    """

    name = "ns16550a"
    mmio_size = 0x100
    valid_sizes = (1, 8)
    impl_sizes = (1, 8)  # every access touches one register, whatever its size

    regshift = Prop(int, 0, "register spacing is 1 << regshift bytes (0..5)")
    fifo_size = Prop(int, 16, "receive FIFO depth in bytes (1..256)")

    def __init__(self, chardev: CharBackend | str | None = None, **props: Any) -> None:
        super().__init__(**props)
        if not 0 <= self.regshift <= 5:
            raise DeviceError(f"device {self.name!r}: regshift={self.regshift} "
                              "must be 0..5 (8 registers in a 0x100-byte window)")
        if not 1 <= self.fifo_size <= 256:
            raise DeviceError(f"device {self.name!r}: fifo_size={self.fifo_size} "
                              "must be 1..256")
        # the MMIO decoder's, read on every access (a Prop is a Python descriptor)
        self._shift = self.regshift
        self._lane_mask = (1 << self._shift) - 1
        self.irq = self.irq_line(self.name)
        self._lock = threading.RLock()
        self._rx: deque[tuple[int, int]] = deque()  # (byte, PE|FE|BI flags)
        self._machine: Any = None
        self.reset()
        self.chardev: CharBackend = NullChar()
        self._owns_chardev = False
        self.set_chardev(chardev)

    # -- wiring ------------------------------------------------------------------

    def set_chardev(self, chardev: CharBackend | str | None) -> None:
        """Connect a new host back-end.  The old one is detached; it is closed
        only when the device made it from a ``-serial`` string."""
        owns = isinstance(chardev, str)
        if isinstance(chardev, str):
            chardev = chardev_from_spec(chardev)
        self._release_chardev()
        self.chardev = chardev if chardev is not None else NullChar()
        self._owns_chardev = owns
        self.chardev.attach(self)

    def _release_chardev(self) -> None:
        old = self.chardev
        if old.frontend is self:
            old.detach()
        if self._owns_chardev:
            old.close()
            self._owns_chardev = False

    def realize(self, machine: Any) -> None:
        """Remember the machine: host input wakes it (``machine.kick()``) so a
        CPU halted in WFI sees the interrupt."""
        self._machine = machine
        super().realize(machine)

    def unrealize(self) -> None:
        self._release_chardev()
        self._machine = None
        super().unrealize()

    def _wake_machine(self) -> None:
        machine = self._machine
        kick = getattr(machine, "kick", None)
        if kick is not None:
            kick()

    def reset(self) -> None:
        """Power-on state (QEMU's ``serial_reset``): LSR 0x60, IIR 0x01,
        MSR CTS|DSR|DCD, MCR OUT2, divisor 12, FIFOs off and empty."""
        with self._lock:
            self.ier = 0
            self.lcr = 0
            self.mcr = r.MCR_OUT2
            self.fcr = 0
            self.scr = 0
            self.divisor = _DIVISOR_POWER_ON
            self._rbr = 0
            self._rx.clear()
            self._lsr_err = 0  # latched OE|PE|FE|BI
            self._fifo_err = False  # LSR bit 7
            self._thr_ipending = False
            self._msr_lines = _MSR_POWER_ON  # external CTS/DSR/RI/DCD
            self._msr_delta = 0
            self._iir_id = r.IIR_NO_INT
            self._update_irq()
        chardev = getattr(self, "chardev", None)
        if chardev is not None:
            chardev.accept_input()

    # -- derived state ---------------------------------------------------------------

    @property
    def fifo_enabled(self) -> bool:
        """FCR bit 0: the 16-byte FIFO mode (else a 16450's one-byte holding register)."""
        return bool(self.fcr & r.FCR_ENABLE_FIFO)

    @property
    def trigger_level(self) -> int:
        """Receive FIFO level that raises the data-available interrupt."""
        level = r.FCR_TRIGGER_LEVELS[self.fcr & r.FCR_TRIGGER_MASK]
        return min(level, self.fifo_size)

    @property
    def loopback(self) -> bool:
        """MCR bit 4: the transmitter feeds the receiver."""
        return bool(self.mcr & r.MCR_LOOP)

    @property
    def rx_level(self) -> int:
        """Bytes waiting in the receive FIFO (or holding register)."""
        return len(self._rx)

    def _modem_inputs(self) -> int:
        if self.mcr & r.MCR_LOOP:
            return (((self.mcr & (r.MCR_OUT1 | r.MCR_OUT2)) << 4)
                    | ((self.mcr & r.MCR_RTS) << 3) | ((self.mcr & r.MCR_DTR) << 5))
        return self._msr_lines

    def _lsr(self) -> int:
        lsr = r.LSR_THRE | r.LSR_TEMT | self._lsr_err
        if self._rx:
            lsr |= r.LSR_DR
        if self._fifo_err and self.fcr & r.FCR_ENABLE_FIFO:
            lsr |= r.LSR_FIFOE
        return lsr

    def _update_irq(self) -> None:
        """Pick the highest-priority pending source into IIR and drive the line."""
        ier = self.ier
        if not ier:     # (each source needs its enable bit: a polled console's case)
            iid = r.IIR_NO_INT
        elif ier & r.IER_RLSI and self._lsr_err & r.LSR_INT_ANY:
            iid = r.IIR_RLSI
        elif ier & r.IER_RDI and self._rx:
            if self.fcr & r.FCR_ENABLE_FIFO and len(self._rx) < self.trigger_level:
                iid = r.IIR_CTI
            else:
                iid = r.IIR_RDI
        elif ier & r.IER_THRI and self._thr_ipending:
            iid = r.IIR_THRI
        elif ier & r.IER_MSI and self._msr_delta:
            iid = r.IIR_MSI
        else:
            iid = r.IIR_NO_INT
        self._iir_id = iid
        self.irq.set(iid != r.IIR_NO_INT)

    def _set_modem_inputs(self, old: int) -> None:
        new = self._modem_inputs()
        changed = old ^ new
        self._msr_delta |= ((changed & r.MSR_CTS) >> 4) | ((changed & r.MSR_DSR) >> 4) \
            | ((changed & r.MSR_DCD) >> 4)
        if old & r.MSR_RI and not new & r.MSR_RI:
            self._msr_delta |= r.MSR_TERI

    # -- receive path ------------------------------------------------------------------

    def _rx_push(self, byte: int, flags: int = 0) -> None:
        capacity = self.fifo_size if self.fifo_enabled else 1
        if len(self._rx) < capacity:
            self._rx.append((byte & 0xFF, flags))
            if len(self._rx) == 1:
                self._latch_top()
            if flags:
                self._fifo_err = True
        elif self.fifo_enabled:
            self._lsr_err |= r.LSR_OE  # the FIFO keeps its contents; this byte is lost
        else:
            self._rx[0] = (byte & 0xFF, flags)  # 16450 mode: RBR is overwritten
            self._lsr_err |= r.LSR_OE | flags

    def _latch_top(self) -> None:
        if self._rx:
            self._lsr_err |= self._rx[0][1]

    def can_receive(self) -> int:
        """Chardev frontend: bytes the receiver takes now (free FIFO space)."""
        with self._lock:
            if self.mcr & r.MCR_LOOP:
                return 0  # in loopback the receiver is connected to the transmitter
            if self.fifo_enabled:
                return self.fifo_size - len(self._rx)
            return 0 if self._rx else 1

    def receive(self, data: bytes) -> None:
        """Chardev frontend: bytes from the host."""
        with self._lock:
            for byte in data:
                self._rx_push(byte)
            self._update_irq()
        self._wake_machine()

    def receive_break(self) -> None:
        """Chardev frontend: a line break (a NUL with BI, as on the wire)."""
        with self._lock:
            self._rx_push(0, r.LSR_BI)
            self._update_irq()
        self._wake_machine()

    def inject_rx_error(self, byte: int, *, parity: bool = False, framing: bool = False,
                        overrun: bool = False) -> None:
        """Receive ``byte`` with a parity and/or framing error, or an overrun
        (for tests and fault injection; a back-end cannot produce these)."""
        with self._lock:
            self._rx_push(byte, (r.LSR_PE if parity else 0) | (r.LSR_FE if framing else 0))
            if overrun:
                self._lsr_err |= r.LSR_OE
            self._update_irq()

    def set_modem_lines(self, *, cts: bool | None = None, dsr: bool | None = None,
                        dcd: bool | None = None, ri: bool | None = None) -> None:
        """Change the external modem-status inputs (delta bits and MSI follow)."""
        with self._lock:
            old = self._modem_inputs()
            for bit, level in ((r.MSR_CTS, cts), (r.MSR_DSR, dsr), (r.MSR_DCD, dcd),
                               (r.MSR_RI, ri)):
                if level is not None:
                    self._msr_lines = self._msr_lines | bit if level else self._msr_lines & ~bit
            self._set_modem_inputs(old)
            self._update_irq()

    # -- MMIO -----------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        reg = offset >> self._shift     # (_decode inline: a call per access costs)
        if offset & self._lane_mask or not 0 <= reg < r.NUM_REGS:
            return 0
        accept = False
        with self._lock:
            if reg == r.LSR and not self._lsr_err and not self._fifo_err:
                return self._lsr()      # a polled console's read: nothing to clear
            value, accept = self._read_reg(reg)
        if accept:
            self.chardev.accept_input()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        reg = offset >> self._shift
        if offset & self._lane_mask or not 0 <= reg < r.NUM_REGS:
            return
        with self._lock:
            accept = self._write_reg(reg, value & 0xFF)
        if accept:
            self.chardev.accept_input()

    def _read_reg(self, reg: int) -> tuple[int, bool]:
        if reg == r.LSR:    # first: what a polling driver reads before each byte
            value = self._lsr()
            if self._lsr_err:
                self._lsr_err = 0
                self._update_irq()
            if self._fifo_err:  # bit 7 stays only for errors behind the top byte
                self._fifo_err = any(flags for _b, flags in list(self._rx)[1:])
            return value, False
        dlab = self.lcr & r.LCR_DLAB
        if reg == r.RBR:
            if dlab:
                return self.divisor & 0xFF, False
            if self._rx:
                self._rbr = self._rx.popleft()[0]
                self._latch_top()
                value = self._rbr
            else:
                value = 0 if self.fifo_enabled else self._rbr
            self._update_irq()
            return value, not self.loopback
        if reg == r.IER:
            return (self.divisor >> 8 if dlab else self.ier), False
        if reg == r.IIR:
            value = self._iir_id | (r.IIR_FIFO_ENABLED if self.fifo_enabled else 0)
            if self._iir_id == r.IIR_THRI:
                self._thr_ipending = False  # reading IIR acknowledges THRE
                self._update_irq()
            return value, False
        if reg == r.LCR:
            return self.lcr, False
        if reg == r.MCR:
            return self.mcr, False
        if reg == r.MSR:
            value = self._modem_inputs() | self._msr_delta
            if self._msr_delta:
                self._msr_delta = 0
                self._update_irq()
            return value, False
        return self.scr, False  # SCR

    def _write_reg(self, reg: int, value: int) -> bool:
        """Returns True when the receiver gained room (tell the back-end)."""
        dlab = self.lcr & r.LCR_DLAB
        if reg == r.THR:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif reg == r.IER:
            if dlab:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                self._write_ier(value)
        elif reg == r.FCR:
            return self._write_fcr(value)
        elif reg == r.LCR:
            self.lcr = value
        elif reg == r.MCR:
            was_loop = self.loopback
            old = self._modem_inputs()
            self.mcr = value & r.MCR_MASK
            self._set_modem_inputs(old)
            self._update_irq()
            return was_loop and not self.loopback
        elif reg == r.SCR:
            self.scr = value
        # LSR and MSR are read-only: writes are ignored
        return False

    def _transmit(self, byte: int) -> None:
        # QEMU: THR write clears THRE and its interrupt, the byte leaves at
        # once, THRE comes back and re-arms the interrupt.
        if not self.ier and self._iir_id == r.IIR_NO_INT and not self.mcr & r.MCR_LOOP:
            # a polled console's byte (Linux's console writes with IER 0): with
            # every source off, IIR and the line stay as they are
            self.chardev.write(_BYTES[byte])
            self._thr_ipending = True
            return
        self._thr_ipending = False
        self._update_irq()
        loopback = self.mcr & r.MCR_LOOP
        if not loopback:
            self.chardev.write(_BYTES[byte])
        self._thr_ipending = True
        self._update_irq()
        if loopback:
            self._rx_push(byte)
            self._update_irq()

    def _write_ier(self, value: int) -> None:
        value &= r.IER_MASK
        changed = self.ier ^ value
        self.ier = value
        if changed & r.IER_THRI:
            # Enabling ETBEI with THR empty raises THRE (QEMU, Windows relies on it)
            self._thr_ipending = bool(value & r.IER_THRI)
        if changed:
            self._update_irq()

    def _write_fcr(self, value: int) -> bool:
        if (value ^ self.fcr) & r.FCR_ENABLE_FIFO:
            value |= r.FCR_CLEAR_RCVR | r.FCR_CLEAR_XMIT  # enable/disable flushes both
        cleared = False
        if value & r.FCR_CLEAR_RCVR:
            cleared = bool(self._rx)
            self._rx.clear()
            self._lsr_err &= ~(r.LSR_BI | r.LSR_PE | r.LSR_FE)
            self._fifo_err = False
        if value & r.FCR_CLEAR_XMIT:
            self._thr_ipending = True  # the transmitter is empty (QEMU)
        self.fcr = value & r.FCR_STICKY
        self._update_irq()
        return cleared or bool(value & r.FCR_ENABLE_FIFO)

    # -- state -----------------------------------------------------------------------------

    STATE_VERSION = 1
    _REGS = (("ier", r.IER_MASK), ("lcr", 0xFF), ("mcr", r.MCR_MASK), ("fcr", r.FCR_STICKY),
             ("scr", 0xFF), ("divisor", 0xFFFF), ("rbr", 0xFF), ("lsr_err", r.LSR_INT_ANY),
             ("msr_lines", 0xF0), ("msr_delta", 0x0F))

    def save_state(self) -> dict[str, Any]:
        """Registers, the receive FIFO (bytes and their error flags), latched errors,
        the THRE interrupt and the modem lines (IIR is derived from them)."""
        with self._lock:
            rec = header(self.name, self.STATE_VERSION)
            rec.update(ier=self.ier, lcr=self.lcr, mcr=self.mcr, fcr=self.fcr, scr=self.scr,
                       divisor=self.divisor, rbr=self._rbr, lsr_err=self._lsr_err,
                       msr_lines=self._msr_lines, msr_delta=self._msr_delta,
                       fifo_err=self._fifo_err, thr_ipending=self._thr_ipending,
                       rx=[[b, flags] for b, flags in self._rx])
            return rec

    def check_state(self, record: Any) -> None:
        """``StateError`` unless :meth:`load_state` would take ``record``."""
        rec = check_header(record, self.name, self.STATE_VERSION)
        where = f"{self.name} state"
        for key, mask in self._REGS:
            if get_int(rec, key, 0, mask, where) & ~mask:
                raise StateError(f"{where}: {key}={rec[key]:#x} has bits outside {mask:#x}")
        get_bool(rec, "fifo_err", where)
        get_bool(rec, "thr_ipending", where)
        rx = rec.get("rx")
        capacity = self.fifo_size if rec["fcr"] & r.FCR_ENABLE_FIFO else 1
        if not isinstance(rx, list) or len(rx) > capacity:
            raise StateError(f"{where}: rx is not a list of at most {capacity} bytes")
        errors = r.LSR_PE | r.LSR_FE | r.LSR_BI
        for item in rx:
            if (not isinstance(item, list) or len(item) != 2
                    or any(type(v) is not int for v in item)
                    or not 0 <= item[0] <= 0xFF or item[1] & ~errors or item[1] < 0):
                raise StateError(f"{where}: rx entry {item!r} is not [byte, PE|FE|BI]")

    def load_state(self, record: dict[str, Any]) -> None:
        """Check, then take, a :meth:`save_state` record; the interrupt follows."""
        self.check_state(record)
        with self._lock:
            self.ier, self.lcr, self.mcr = record["ier"], record["lcr"], record["mcr"]
            self.fcr, self.scr, self.divisor = record["fcr"], record["scr"], record["divisor"]
            self._rbr = record["rbr"]
            self._lsr_err = record["lsr_err"]
            self._msr_lines = record["msr_lines"]
            self._msr_delta = record["msr_delta"]
            self._fifo_err = record["fifo_err"]
            self._thr_ipending = record["thr_ipending"]
            self._rx = deque((b, flags) for b, flags in record["rx"])
            self._update_irq()
        self.chardev.accept_input()

    def __repr__(self) -> str:
        return (f"Ns16550a(base={self.base if self.base is None else hex(self.base)}, "
                f"regshift={self.regshift}, lsr={self._lsr():#04x}, ier={self.ier:#04x}, "
                f"rx={len(self._rx)}, irq={int(self.irq.level)})")
