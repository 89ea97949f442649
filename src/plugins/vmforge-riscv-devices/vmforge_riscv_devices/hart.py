"""What the RISC-V interrupt controllers need of a hart: the ``mip`` bits they
drive and the one method they call to drive them."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable


__all__ = [
    "MIP_MEIP",
    "MIP_MSIP",
    "MIP_MTIP",
    "MIP_SEIP",
    "MIP_SSIP",
    "MIP_STIP",
    "HartIrqInputs",
]

#: RISC-V ``mip`` bit numbers (the privileged spec's interrupt causes)
MIP_SSIP = 1
MIP_MSIP = 3
MIP_STIP = 5
MIP_MTIP = 7
MIP_SEIP = 9
MIP_MEIP = 11


@runtime_checkable
class HartIrqInputs(Protocol):
    """What the PLIC and CLINT need of a hart: drive one ``mip`` bit."""

    def set_irq_line(self, bit: int, level: bool) -> None: ...
