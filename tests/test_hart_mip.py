"""mip's SEIP: software bit OR external signal, and RMW instructions use the former."""

from __future__ import annotations

import struct

from vmforge.accel.interp import RiscvHart
from vmforge.memory import AddressSpace

RAM = 0x8000_0000
SEIP, STIP = 1 << 9, 1 << 5


def test_csrc_on_mip_does_not_latch_the_external_seip() -> None:
    """OpenSBI clears STIP with csrc while a PLIC interrupt is pending: once the
    PLIC lowers its line, SEIP must read 0 again (it stayed stuck at 1, and
    Linux spun in its external-interrupt handler)."""
    space = AddressSpace()
    space.add_ram(RAM, 0x1000)
    # csrs mip, t0 ; csrc mip, t1 ; j .
    space.memory.write(RAM, struct.pack("<3I", 0x3442A073, 0x34433073, 0x0000006F))
    hart = RiscvHart(space, 0, pc=RAM)
    hart.x[5] = STIP  # t0
    hart.x[6] = STIP  # t1
    hart.set_irq_line(9, True)  # the PLIC asserts SEIP
    hart.run(3)
    assert hart.csr("mip") & SEIP, "the external signal shows in mip"
    hart.set_irq_line(9, False)  # claimed and completed: the PLIC lowers it
    assert hart.csr("mip") & (SEIP | STIP) == 0


def test_software_seip_is_ored_with_the_signal() -> None:
    space = AddressSpace()
    space.add_ram(RAM, 0x1000)
    hart = RiscvHart(space, 0, pc=RAM)
    hart.set_csr("mip", SEIP)  # M-mode software may set SEIP itself
    hart.set_irq_line(9, True)
    hart.set_irq_line(9, False)
    assert hart.csr("mip") & SEIP
    hart.set_csr("mip", 0)
    assert not hart.csr("mip") & SEIP
