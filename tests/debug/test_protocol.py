"""The remote protocol's framing, the target description, -gdb parsing and the
debugger's page-table walk, without a machine."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vmforge.accel.interp import CSR
from vmforge.debug import DebugError, parse_gdb_dev
from vmforge.debug.mmu import translate
from vmforge.debug.protocol import (
    ACK,
    INTERRUPT,
    NACK,
    PACKET,
    PacketReader,
    checksum,
    frame,
    target_xml,
    unescape,
)
from vmforge.memory import GuestMemory


def test_frame_escapes_and_sums() -> None:
    assert frame(b"OK") == b"$OK#9a"
    body = frame(b"a$b#c}d*e")
    assert body == b"$a}\x04b}\x03c}]d}\x0ae#%02x" % checksum(body[1:-3])
    assert unescape(body[1:-3]) == b"a$b#c}d*e"


def test_reader_splits_acks_interrupts_and_packets() -> None:
    r = PacketReader()
    events = r.feed(b"+$g#67\x03-junk$m0,4#fd")
    assert [(e.kind, e.data) for e in events] == [
        (ACK, b""), (PACKET, b"g"), (INTERRUPT, b""), (NACK, b"resend"), (PACKET, b"m0,4")]
    # a packet split across reads, then one with a bad checksum
    assert r.feed(b"$qC#") == []
    assert [(e.kind, e.data) for e in r.feed(b"b4")] == [(PACKET, b"qC")]
    assert [e.kind for e in r.feed(b"$qC#00")] == [NACK]
    assert [e.kind for e in r.feed(b"$qC#zz")] == [NACK]


def test_reader_drops_a_packet_that_never_ends() -> None:
    r = PacketReader(limit=64)
    assert [e.kind for e in r.feed(b"$" + b"a" * 100)] == [NACK]
    assert [(e.kind, e.data) for e in r.feed(b"$g#67")] == [(PACKET, b"g")]


def test_target_description_numbers_registers_as_qemu() -> None:
    doc = ET.fromstring(target_xml({"mstatus": 0x300, "fcsr": 3, "satp": 0x180}))
    assert doc.findtext("architecture") == "riscv:rv64"
    regs = {r.get("name"): int(r.get("regnum")) for r in doc.iter("reg")}
    assert regs["zero"] == 0 and regs["t6"] == 31 and regs["pc"] == 32
    assert regs["ft0"] == 33 and regs["ft11"] == 64 and regs["priv"] == 65
    assert regs["fcsr"] == 66 + 3 and regs["satp"] == 66 + 0x180
    assert regs["mstatus"] == 66 + 0x300           # QEMU 7.2: sstatus is 322
    features = [f.get("name") for f in doc.iter("feature")]
    assert features == ["org.gnu.gdb.riscv.cpu", "org.gnu.gdb.riscv.fpu",
                        "org.gnu.gdb.riscv.virtual", "org.gnu.gdb.riscv.csr"]
    assert len(set(regs.values())) == len(regs)


@pytest.mark.parametrize("spec, want", [
    ("tcp::1234", ("tcp", ("127.0.0.1", 1234))),
    ("tcp:127.0.0.1:5", ("tcp", ("127.0.0.1", 5))),
    ("tcp:localhost:7,server=on,wait=off", ("tcp", ("127.0.0.1", 7))),
    (":99", ("tcp", ("127.0.0.1", 99))),
    ("1234", ("tcp", ("127.0.0.1", 1234))),
    ("unix:/run/x.sock,server=on", ("unix", "/run/x.sock")),
])
def test_gdb_dev(spec: str, want: tuple) -> None:
    assert parse_gdb_dev(spec) == want


@pytest.mark.parametrize("spec", ["tcp:0.0.0.0:1234", "tcp:10.0.0.1:1", "tcp::x",
                                  "tcp::70000", "unix:", "tcp:[::]:1"])
def test_gdb_dev_refused(spec: str) -> None:
    with pytest.raises(DebugError):
        parse_gdb_dev(spec)


class FakeHart:
    def __init__(self, priv: int, satp: int, mstatus: int = 0) -> None:
        self.priv = priv
        self.regs = {"satp": satp, "mstatus": mstatus}

    def csr(self, name: str | int) -> int:
        return self.regs[name] if isinstance(name, str) else self.regs[
            {v: k for k, v in CSR.items()}[name]]


def _pte(pa: int, flags: int) -> int:
    return (pa >> 12) << 10 | flags


def test_sv39_and_sv48_walks() -> None:
    mem = GuestMemory()
    mem.add_ram(0x8000_0000, 1 << 24)
    root, l1, l0 = 0x8010_0000, 0x8010_1000, 0x8010_2000
    # Sv39: VA 0x4000_0000 is a 1 GiB page at 0x8000_0000; VA 0x1000 a 4 KiB page
    # at 0x8020_3000 via two tables; VA 0xffff_ffc0_0000_0000 (sign-extended) a gigapage
    mem.write_u64(root + 8 * 1, _pte(0x8000_0000, 0xCF))        # V R W X A D
    mem.write_u64(root + 8 * 0, _pte(l1, 1))
    mem.write_u64(l1 + 8 * 0, _pte(l0, 1))
    mem.write_u64(l0 + 8 * 1, _pte(0x8020_3000, 0x43))         # V R A
    mem.write_u64(root + 8 * 256, _pte(0x8000_0000, 0x4B))
    satp39 = 8 << 60 | root >> 12
    s = FakeHart(1, satp39)
    assert translate(s, mem, 0x4000_0123) == 0x8000_0123
    assert translate(s, mem, 0x1ABC) == 0x8020_3ABC
    assert translate(s, mem, 0xFFFF_FFC0_0000_0010) == 0x8000_0010
    assert translate(s, mem, 0x2000) is None                   # invalid PTE
    assert translate(s, mem, 0x0000_0040_0000_0000) is None    # not sign-extended
    before = mem.read(root, 4096) + mem.read(l0, 4096)
    translate(s, mem, 0x1ABC)
    assert mem.read(root, 4096) + mem.read(l0, 4096) == before  # no A/D written
    # M-mode: physical, unless MPRV with MPP=S
    assert translate(FakeHart(3, satp39), mem, 0x4000_0000) == 0x4000_0000
    assert translate(FakeHart(3, satp39, mstatus=1 << 17 | 1 << 11), mem,
                     0x4000_0000) == 0x8000_0000
    # a misaligned gigapage and a reserved-bit PTE are faults
    mem.write_u64(root + 8 * 2, _pte(0x8000_1000, 0xCF))
    assert translate(s, mem, 0x8000_0000) is None
    mem.write_u64(root + 8 * 3, _pte(0x8000_0000, 0xCF) | 1 << 60)
    assert translate(s, mem, 0xC000_0000) is None
    # Sv48: one more level
    top = 0x8010_3000
    mem.write_u64(top + 8 * 0, _pte(root, 1))
    s48 = FakeHart(0, 9 << 60 | top >> 12)
    assert translate(s48, mem, 0x4000_0123) == 0x8000_0123
    assert translate(s48, mem, 0x8000_0000_0000) is None       # bit 47 set, not extended
