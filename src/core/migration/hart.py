"""The state record of a RISC-V hart (``vmforge.accel.interp.RiscvHart``).

What a hart is architecturally: x and f registers, pc, privilege, every CSR
(the machine and supervisor trap CSRs, ``mstatus``, ``mip``'s software- and
device-driven halves, ``mie``, ``satp``, delegation, counters and their
enables, ``fcsr``, PMP), ``instret``, the timer comparators (``mtimecmp``, Sstc's
``stimecmp``: version 2) and the offset
guest writes gave ``mtime``.  Not in it, as in QEMU: the LR/SC reservation
(dropped on load as a trap drops it), TLBs and decoded or compiled code
(flushed on load), debugger state.  Whether the hart waits in ``wfi`` is its
cluster's (``HartCluster.halted``) and saved by the machine beside it.
"""

from __future__ import annotations

from typing import Any

from vmforge._fast import riscv as _riscv
from vmforge.migration.record import (
    U64,
    StateError,
    check_header,
    get_int,
    get_ints,
    header,
)

__all__ = ["HART_STATE_VERSION", "check_hart", "load_hart", "save_hart"]

HART_STATE_VERSION = 2
_NAME = "riscv-hart"
#: field -> highest value (all from 0)
_LIMITS: dict[str, int] = {name: U64 for name in _riscv.STATE_FIELDS}
_LIMITS.update(fflags=31, frm=7)
_SATP_MODES = (0, 8, 9)     # bare, Sv39, Sv48
#: mstatus: what M-mode software can write, XS, SD, and UXL = SXL = 2 (64-bit)
_MSTATUS_BITS = 0x7E79AA | 3 << 15 | 1 << 63
_MSTATUS_XLEN = 2 << 32 | 2 << 34


def save_hart(hart: Any) -> dict[str, Any]:
    """The record of a hart that is not running."""
    x, f, pc, priv, regs, pmpcfg, pmpaddr, mtime = _riscv.hart_get_state(hart)
    rec = header(_NAME, HART_STATE_VERSION)
    rec.update(hartid=hart.csr("mhartid"), misa=hart.csr("misa"), pc=pc, priv=priv, x=x,
               f=f, csrs=regs, pmpcfg=pmpcfg, pmpaddr=pmpaddr, mtime=mtime)
    return rec


def check_hart(hart: Any, record: Any) -> None:
    """:class:`StateError` unless ``record`` is a valid record for ``hart``."""
    hartid = hart.csr("mhartid")
    where = f"{_NAME} {hartid} state"
    rec = check_header(record, _NAME, HART_STATE_VERSION)
    get_int(rec, "hartid", hartid, hartid, where)
    get_int(rec, "pc", 0, U64, where)
    priv = get_int(rec, "priv", 0, 3, where)
    if priv == 2:
        raise StateError(f"{where}: priv=2 is not U, S or M")
    get_ints(rec, "x", 32, 0, U64, where)
    get_ints(rec, "f", 32, 0, U64, where)
    get_ints(rec, "pmpcfg", 16, 0, U64, where)
    get_ints(rec, "pmpaddr", 64, 0, U64, where)
    get_int(rec, "mtime", 0, U64, where)
    csrs = rec.get("csrs")
    if not isinstance(csrs, dict) or set(csrs) != set(_LIMITS):
        raise StateError(f"{where}: csrs must have exactly the fields "
                         f"{', '.join(sorted(_LIMITS))}")
    for name, hi in _LIMITS.items():
        get_int(csrs, name, 0, hi, f"{where} csrs")
    misa = hart.csr("misa")
    if rec.get("misa") != misa:
        raise StateError(f"{where}: misa={rec.get('misa')!r}, this hart is {misa:#x} "
                         "(another CPU model)")
    mstatus = csrs["mstatus"]
    if mstatus & ~_MSTATUS_BITS != _MSTATUS_XLEN:
        raise StateError(f"{where}: csrs mstatus={mstatus:#x} has bits this hart does not "
                         "have, or is not a 64-bit one")
    if csrs["satp"] >> 60 not in _SATP_MODES:
        raise StateError(f"{where}: csrs satp={csrs['satp']:#x} has a translation mode "
                         "this hart does not have")


def load_hart(hart: Any, record: Any) -> None:
    """Check ``record``, then put it into ``hart`` (not running)."""
    check_hart(hart, record)
    _riscv.hart_set_state(hart, record["x"], record["f"], record["pc"], record["priv"],
                          record["csrs"], record["pmpcfg"], record["pmpaddr"],
                          record["mtime"])
