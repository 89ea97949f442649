"""The GDB remote serial protocol's framing, and the RV64 target description.

Packets are ``$payload#xx`` with ``xx`` the modulo-256 sum of the payload in
hex; binary data (``X`` packets, ``qXfer`` replies) escapes ``$ # } *`` as
``}`` followed by the byte XOR 0x20.  A lone 0x03 outside a packet is an
interrupt (Ctrl-C).  :class:`PacketReader` turns a byte stream into events and
never raises on malformed input: a bad checksum is a ``nack`` event, garbage
between packets is skipped, an oversized packet is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACK",
    "INTERRUPT",
    "NACK",
    "NUM_G_REGS",
    "PACKET",
    "REG_CSR0",
    "REG_F0",
    "REG_PC",
    "REG_PRIV",
    "PacketReader",
    "checksum",
    "frame",
    "target_xml",
    "unescape",
]

ACK, NACK, INTERRUPT, PACKET = "ack", "nack", "interrupt", "packet"

#: the largest packet the stub takes or sends (``PacketSize`` in qSupported)
MAX_PACKET = 0x1000

# register numbers, as QEMU 7.2 lays them out for an RV64 hart with F and D:
# x0-x31 0-31, pc 32, f0-f31 33-64, priv 65, then CSR n at 66 + n
REG_PC = 32
REG_F0 = 33
REG_PRIV = 65
REG_CSR0 = 66
#: what ``g`` and ``G`` carry: x0-x31 and pc
NUM_G_REGS = 33


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in b"$#}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """``$payload#xx`` with the special bytes escaped."""
    body = escape(payload)
    return b"$" + body + b"#%02x" % checksum(body)


@dataclass
class Event:
    kind: str
    data: bytes = b""


class PacketReader:
    """Splits what gdb sends into acks, interrupts and checked packets."""

    def __init__(self, limit: int = 4 * MAX_PACKET) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        buf = self._buf
        while buf:
            head = buf[0]
            if head == 0x24:                     # '$'
                end = buf.find(b"#")
                if end < 0 or len(buf) < end + 3:
                    if len(buf) > self.limit:   # never ends: drop it
                        events.append(Event(NACK))
                        buf.clear()
                    break
                body = bytes(buf[1:end])
                given = bytes(buf[end + 1:end + 3])
                del buf[:end + 3]
                try:
                    ok = int(given, 16) == checksum(body)
                except ValueError:
                    ok = False
                events.append(Event(PACKET, body) if ok else Event(NACK))
            else:
                del buf[0]
                if head == 0x03:
                    events.append(Event(INTERRUPT))
                elif head == 0x2B:               # '+'
                    events.append(Event(ACK))
                elif head == 0x2D:               # '-'
                    events.append(Event(NACK, b"resend"))
                # anything else between packets is noise
        return events


_CPU_REGS = (("zero", "int"), ("ra", "code_ptr"), ("sp", "data_ptr"), ("gp", "data_ptr"),
             ("tp", "data_ptr"), ("t0", "int"), ("t1", "int"), ("t2", "int"),
             ("fp", "data_ptr"), ("s1", "int"),
             *((f"a{i}", "int") for i in range(8)),
             *((f"s{i}", "int") for i in range(2, 12)),
             *((f"t{i}", "int") for i in range(3, 7)))
_FPU_NAMES = ([f"ft{i}" for i in range(8)] + ["fs0", "fs1"] + [f"fa{i}" for i in range(8)]
              + [f"fs{i}" for i in range(2, 12)] + [f"ft{i}" for i in range(8, 12)])


def target_xml(csrs: dict[str, int]) -> str:
    """The target description: RV64 core, FPU (D), the ``priv`` virtual register
    and ``csrs`` (name -> CSR number), all in one document, numbered as QEMU does."""
    parts = ['<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target><architecture>riscv:rv64</architecture>",
             '<feature name="org.gnu.gdb.riscv.cpu">']
    for i, (name, typ) in enumerate(_CPU_REGS):
        parts.append(f'<reg name="{name}" bitsize="64" type="{typ}" regnum="{i}"/>')
    parts.append(f'<reg name="pc" bitsize="64" type="code_ptr" regnum="{REG_PC}"/>')
    parts.append('</feature><feature name="org.gnu.gdb.riscv.fpu">'
                 '<union id="riscv_double"><field name="float" type="ieee_single"/>'
                 '<field name="double" type="ieee_double"/></union>')
    for i, name in enumerate(_FPU_NAMES):
        parts.append(f'<reg name="{name}" bitsize="64" type="riscv_double" '
                     f'regnum="{REG_F0 + i}"/>')
    parts.append('</feature><feature name="org.gnu.gdb.riscv.virtual">'
                 f'<reg name="priv" bitsize="64" regnum="{REG_PRIV}"/></feature>'
                 '<feature name="org.gnu.gdb.riscv.csr">')
    for name, num in sorted(csrs.items(), key=lambda kv: kv[1]):
        parts.append(f'<reg name="{name}" bitsize="64" type="int" regnum="{REG_CSR0 + num}"/>')
    parts.append("</feature></target>")
    return "".join(parts)
