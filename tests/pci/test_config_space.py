"""Configuration space semantics: read-only identity, writable and write-1-to-clear
bits, the capability list, the size limit, reset, and the state record."""

from __future__ import annotations

import pytest
from pcikit import Nic, Regs

from vmforge.pci import PciStateError, regs


class ExpressNic(Nic):
    name = "test-nic-express"
    is_express = True


def test_header_identity_is_read_only():
    d = Nic()
    assert d.config_read(regs.VENDOR_ID, 4) == 0x100E8086
    assert d.config_read(regs.REVISION_ID, 4) == 0x02000003
    assert d.config_read(regs.SUBSYSTEM_VENDOR_ID, 4) == 0x11001AF4  # QEMU's default
    assert d.config_read(regs.INTERRUPT_PIN, 1) == 1
    before = bytes(d.config[:0x40])
    for reg in (regs.VENDOR_ID, regs.REVISION_ID, regs.HEADER_TYPE & ~3, regs.SUBSYSTEM_VENDOR_ID,
                regs.CAPABILITY_LIST, regs.INTERRUPT_PIN & ~3):
        d.config_write(reg, 4, 0xA5A5A5A5)
    changed = [i for i in range(0x40) if d.config[i] != before[i]]
    # only the interrupt line and the cache line size took the value
    assert changed == [regs.CACHE_LINE_SIZE, regs.INTERRUPT_LINE]
    assert d.config_read(regs.INTERRUPT_LINE, 1) == 0xA5


def test_command_takes_only_its_writable_bits():
    d = Nic()
    d.config_write(regs.COMMAND, 2, 0xFFFF)
    assert d.command == (regs.COMMAND_IO | regs.COMMAND_MEMORY | regs.COMMAND_MASTER
                         | regs.COMMAND_SERR | regs.COMMAND_INTX_DISABLE)
    d.config_write(regs.COMMAND, 1, 0)  # a byte write leaves the high byte alone
    assert d.command == regs.COMMAND_SERR | regs.COMMAND_INTX_DISABLE


def test_status_error_bits_are_write_one_to_clear():
    d = Nic()
    d.config[regs.STATUS:regs.STATUS + 2] = (regs.STATUS_REC_MASTER_ABORT
                                             | regs.STATUS_DETECTED_PARITY).to_bytes(2, "little")
    d.config_write(regs.STATUS, 2, regs.STATUS_REC_MASTER_ABORT)
    assert d.status == regs.STATUS_DETECTED_PARITY
    d.config_write(regs.STATUS, 2, 0)  # writing 0 clears nothing
    assert d.status == regs.STATUS_DETECTED_PARITY
    d.config_write(regs.STATUS, 2, regs.STATUS_INTERRUPT | regs.STATUS_CAP_LIST)
    assert d.status == regs.STATUS_DETECTED_PARITY  # read-only bits ignore writes


def test_conventional_space_ends_at_256_bytes_express_at_4k():
    d, e = Nic(), ExpressNic()
    assert d.config_size == 0x100 and e.config_size == 0x1000
    assert d.config_read(0x100, 4) == 0xFFFFFFFF
    d.config_write(0x100, 4, 0x12345678)
    assert d.config_read(0x100, 4) == 0xFFFFFFFF
    e.config_write(0x100, 4, 0x12345678)  # extended space: writable device area
    assert e.config_read(0x100, 4) == 0x12345678
    assert e.config_read(0xFFC, 4) == 0 and e.config_read(0x1000, 2) == 0xFFFF


def test_capabilities_first_fit_at_the_head_of_the_list():
    d = Nic()
    assert d.status & regs.STATUS_CAP_LIST == 0 and d.capabilities() == []
    a = d.add_capability(regs.CAP_ID_VNDR, 16)
    b = d.add_capability(regs.CAP_ID_VNDR, 20)
    c = d.add_capability(regs.CAP_ID_MSIX, 12)
    assert (a, b, c) == (0x40, 0x50, 0x64)
    assert d.status & regs.STATUS_CAP_LIST
    assert d.capabilities() == [(c, regs.CAP_ID_MSIX), (b, regs.CAP_ID_VNDR),
                                (a, regs.CAP_ID_VNDR)]
    assert d.find_capability(regs.CAP_ID_MSIX) == c
    assert d.find_capability(regs.CAP_ID_EXP) is None
    with pytest.raises(ValueError, match="overlaps"):
        d.add_capability(regs.CAP_ID_PM, 8, offset=0x48)
    # capability bytes are read-only; the free device-specific area is not (QEMU)
    d.config_write(b + 4, 4, 0xFFFFFFFF)
    assert d.config_read(b + 4, 4) == 0
    d.config_write(0x80, 4, 0xCAFEF00D)
    assert d.config_read(0x80, 4) == 0xCAFEF00D


def test_bar_declarations_are_checked():
    d = Nic()
    with pytest.raises(ValueError, match="power of two"):
        d.register_bar(2, 0x3000, regs.BASE_ADDRESS_SPACE_MEMORY, Regs())
    with pytest.raises(ValueError, match="in use"):
        d.register_bar(0, 0x1000, regs.BASE_ADDRESS_SPACE_MEMORY, Regs())
    d.register_bar(4, 0x1000, regs.BASE_ADDRESS_MEM_TYPE_64, Regs())
    with pytest.raises(ValueError, match="in use"):  # the upper half of BAR 4
        d.register_bar(5, 0x1000, regs.BASE_ADDRESS_SPACE_MEMORY, Regs())
    with pytest.raises(ValueError, match="out of range"):
        d.register_bar(5, 0x1000, regs.BASE_ADDRESS_MEM_TYPE_64, Regs())


def test_reset_clears_command_bars_and_interrupt_line():
    d = Nic()
    d.config_write(regs.bar_offset(0), 4, 0x4000_0000)
    d.config_write(regs.bar_offset(1), 4, 0x1000)
    d.config_write(regs.COMMAND, 2, 0x7)
    d.config_write(regs.INTERRUPT_LINE, 1, 9)
    d.config_write(regs.CACHE_LINE_SIZE, 1, 16)
    d.reset()
    assert d.command == 0
    assert d.config_read(regs.bar_offset(0), 4) == 0
    assert d.config_read(regs.bar_offset(1), 4) == regs.BASE_ADDRESS_SPACE_IO
    assert d.config_read(regs.INTERRUPT_LINE, 1) == 0
    assert d.config_read(regs.CACHE_LINE_SIZE, 1) == 0
    assert d.config_read(regs.VENDOR_ID, 4) == 0x100E8086


def test_state_round_trip_and_refusals():
    d = Nic()
    d.config_write(regs.bar_offset(0), 4, 0x4002_0000)
    d.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY)
    d.config_write(0x90, 4, 0x11223344)
    record = d.save_state()
    assert set(record) == {"type", "version", "vendor", "config", "intx", "msix"}
    other = Nic()
    other.load_state(record)
    assert bytes(other.config[:0x100]) == bytes(d.config[:0x100])
    bad = dict(record, config=record["config"][:0x80])
    with pytest.raises(PciStateError, match="256 bytes"):
        other.load_state(bad)
    tampered = bytearray(record["config"])
    tampered[regs.DEVICE_ID] ^= 1  # another device
    fresh = Nic()
    with pytest.raises(PciStateError, match="read-only"):
        fresh.load_state(dict(record, config=bytes(tampered)))
    assert fresh.command == 0  # nothing applied
    tampered = bytearray(record["config"])
    tampered[regs.bar_offset(1)] = 0  # an I/O BAR saved as memory
    with pytest.raises(PciStateError):
        fresh.load_state(dict(record, config=bytes(tampered)))
    with pytest.raises(PciStateError, match="version"):
        fresh.load_state(dict(record, version=99))


def test_addr_property():
    assert Nic(addr="1f.7").addr == "1f.7"
    with pytest.raises(Exception, match="SLOT"):
        Nic(addr="zz")
    with pytest.raises(Exception, match="slot must be"):
        Nic(addr="20")
