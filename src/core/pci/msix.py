"""MSI-X: the capability, the vector table and the pending-bit array (QEMU's ``msix.c``).

:class:`Msix` adds the capability to a :class:`~vmforge.pci.device.PciDevice`
and serves the table and the PBA; :meth:`Msix.exclusive_bar` lays them out in
a BAR of their own exactly as QEMU's ``msix_init_exclusive_bar`` does (a
32-bit memory BAR of at least 4 KiB, the table at 0, the PBA at half of it).

A vector fires with :meth:`Msix.notify`: when MSI-X is enabled and neither
the function nor the vector is masked, the message (the entry's address and
data) goes out through :meth:`PciDevice.send_msi`; otherwise its pending bit
is set and the message goes out when it is unmasked.  Entries start masked.
Enabling MSI-X lowers the function's INTx, as in QEMU.
"""

from __future__ import annotations

from vmforge.pci import regs
from vmforge.pci.device import PciDevice, PciStateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Msix", "MsixBar"]

STATE_VERSION = 1
_CONTROL_HI = regs.MSIX_FLAGS + 1  # the byte that holds Enable and Function Mask


class Msix:
    """The MSI-X capability of a function: ``nvectors`` table entries and their PBA."""

    def __init__(self, dev: PciDevice, nvectors: int, table_bar: int, table_offset: int,
                 pba_bar: int, pba_offset: int, cap_offset: int | None = None) -> None:
        if not 1 <= nvectors <= 2048:
            raise ValueError(f"{dev.name}: MSI-X needs 1..2048 vectors, not {nvectors}")
        if table_offset & 7 or pba_offset & 7:
            raise ValueError(f"{dev.name}: MSI-X table and PBA must be 8-byte aligned")
        self.dev = dev
        self.nvectors = nvectors
        self.table = bytearray(nvectors * regs.MSIX_ENTRY_SIZE)
        self.pba = bytearray((nvectors + 63) // 64 * 8)
        self.cap = dev.add_capability(regs.CAP_ID_MSIX, regs.MSIX_CAP_SIZE, cap_offset)
        c = dev.config
        c[self.cap + regs.MSIX_FLAGS:self.cap + regs.MSIX_FLAGS + 2] = \
            (nvectors - 1).to_bytes(2, "little")
        c[self.cap + regs.MSIX_TABLE:self.cap + regs.MSIX_TABLE + 4] = \
            (table_offset | table_bar).to_bytes(4, "little")
        c[self.cap + regs.MSIX_PBA:self.cap + regs.MSIX_PBA + 4] = \
            (pba_offset | pba_bar).to_bytes(4, "little")
        dev.wmask[self.cap + _CONTROL_HI] |= (regs.MSIX_FLAGS_ENABLE
                                              | regs.MSIX_FLAGS_MASKALL) >> 8
        self.table_offset, self.pba_offset = table_offset, pba_offset
        self.function_masked = True
        self.messages = 0  # messages sent, for statistics and tests
        dev.on_config_write(self._config_written)
        dev.msix = self  # reset and state go with the function's
        self._mask_all_entries()

    @classmethod
    def exclusive_bar(cls, dev: PciDevice, nvectors: int, bar: int,
                      cap_offset: int | None = None) -> Msix:
        """Table and PBA in BAR ``bar`` of their own, laid out as QEMU does."""
        size = 4096
        pba_offset = size // 2
        pba_size = (nvectors + 63) // 64 * 8
        if nvectors * regs.MSIX_ENTRY_SIZE > pba_offset:
            pba_offset = nvectors * regs.MSIX_ENTRY_SIZE
        if pba_offset + pba_size > 4096:
            size = pba_offset + pba_size
        size = 1 << (size - 1).bit_length()
        msix = cls(dev, nvectors, bar, 0, bar, pba_offset, cap_offset)
        dev.register_bar(bar, size, regs.BASE_ADDRESS_SPACE_MEMORY, MsixBar(msix),
                         f"{dev.name}-msix")
        return msix

    # -- state of the capability --------------------------------------------------------------

    @property
    def control(self) -> int:
        c = self.dev.config
        return int.from_bytes(c[self.cap + regs.MSIX_FLAGS:self.cap + regs.MSIX_FLAGS + 2],
                              "little")

    @property
    def enabled(self) -> bool:
        return bool(self.control & regs.MSIX_FLAGS_ENABLE)

    def _mask_all_entries(self) -> None:
        for v in range(self.nvectors):
            self.table[v * regs.MSIX_ENTRY_SIZE + regs.MSIX_ENTRY_VECTOR_CTRL] = \
                regs.MSIX_ENTRY_CTRL_MASKBIT

    def _compute_function_masked(self) -> bool:
        ctrl = self.control
        return not ctrl & regs.MSIX_FLAGS_ENABLE or bool(ctrl & regs.MSIX_FLAGS_MASKALL)

    def vector_masked(self, vector: int, function_masked: bool | None = None) -> bool:
        fmask = self.function_masked if function_masked is None else function_masked
        ctrl = self.table[vector * regs.MSIX_ENTRY_SIZE + regs.MSIX_ENTRY_VECTOR_CTRL]
        return fmask or bool(ctrl & regs.MSIX_ENTRY_CTRL_MASKBIT)

    def pending(self, vector: int) -> bool:
        return bool(self.pba[vector // 8] >> (vector % 8) & 1)

    def _set_pending(self, vector: int, on: bool) -> None:
        if on:
            self.pba[vector // 8] |= 1 << (vector % 8)
        else:
            self.pba[vector // 8] &= ~(1 << (vector % 8)) & 0xFF

    def message(self, vector: int) -> tuple[int, int]:
        """``(address, data)`` of entry ``vector``."""
        e = vector * regs.MSIX_ENTRY_SIZE
        t = self.table
        address = int.from_bytes(t[e:e + 8], "little")
        data = int.from_bytes(t[e + regs.MSIX_ENTRY_DATA:e + regs.MSIX_ENTRY_DATA + 4], "little")
        return address, data

    # -- firing ------------------------------------------------------------------------------

    def notify(self, vector: int) -> None:
        """Fire ``vector``: send its message, or mark it pending while masked."""
        if not 0 <= vector < self.nvectors:
            return
        if self.vector_masked(vector):
            self._set_pending(vector, True)
            return
        self._send(vector)

    def _send(self, vector: int) -> None:
        address, data = self.message(vector)
        self.messages += 1
        self.dev.send_msi(address, data)

    def _mask_update(self, vector: int, was_masked: bool) -> None:
        if not self.vector_masked(vector) and was_masked and self.pending(vector):
            self._set_pending(vector, False)
            self._send(vector)

    def _config_written(self, addr: int, size: int) -> None:
        pos = self.cap + _CONTROL_HI
        if not addr <= pos < addr + size:
            return
        was_masked = self.function_masked
        self.function_masked = self._compute_function_masked()
        if not self.enabled:
            return
        self.dev.set_irq(False)  # MSI-X on: the function no longer uses INTx
        if self.function_masked == was_masked:
            return
        for v in range(self.nvectors):
            self._mask_update(v, self.vector_masked(v, was_masked))

    # -- the table and the PBA (guest MMIO) -----------------------------------------------------

    def table_read(self, offset: int, size: int) -> int:
        if offset < 0 or offset + size > len(self.table):
            return 0
        return int.from_bytes(self.table[offset:offset + size], "little")

    def table_write(self, offset: int, size: int, value: int) -> None:
        if offset < 0 or offset + size > len(self.table):
            return
        vector = offset // regs.MSIX_ENTRY_SIZE
        was_masked = self.vector_masked(vector)
        self.table[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
            size, "little")
        self._mask_update(vector, was_masked)

    def pba_read(self, offset: int, size: int) -> int:
        if offset < 0 or offset + size > len(self.pba):
            return 0
        return int.from_bytes(self.pba[offset:offset + size], "little")

    # -- life cycle and state -----------------------------------------------------------------

    def reset(self) -> None:
        """QEMU's ``msix_reset``: disabled, unmasked function, entries masked, nothing pending."""
        c = self.dev.config
        c[self.cap + _CONTROL_HI] &= ~((regs.MSIX_FLAGS_ENABLE | regs.MSIX_FLAGS_MASKALL)
                                       >> 8) & 0xFF
        self.table[:] = bytes(len(self.table))
        self.pba[:] = bytes(len(self.pba))
        self._mask_all_entries()
        self.function_masked = True

    def save_state(self) -> dict[str, Any]:
        return {"type": "msix", "version": STATE_VERSION, "vectors": self.nvectors,
                "table": bytes(self.table), "pba": bytes(self.pba)}

    def check_state(self, record: Any) -> None:
        if not isinstance(record, dict) or record.get("type") != "msix":
            raise PciStateError(f"{self.dev.name}: not an MSI-X record")
        if record.get("version") != STATE_VERSION or record.get("vectors") != self.nvectors:
            raise PciStateError(f"{self.dev.name}: MSI-X record version or vector count "
                                "does not match")
        for key, want in (("table", len(self.table)), ("pba", len(self.pba))):
            value = record.get(key)
            if not isinstance(value, bytes | bytearray) or len(value) != want:
                raise PciStateError(f"{self.dev.name}: MSI-X {key} is not {want} bytes")

    def apply_state(self, record: dict[str, Any]) -> None:
        """After the configuration space is loaded: table, PBA, the function mask."""
        self.table[:] = record["table"]
        self.pba[:] = record["pba"]
        self.function_masked = self._compute_function_masked()


class MsixBar:
    """The MMIO ops of a BAR holding an MSI-X table and PBA (QEMU's layout)."""

    valid_sizes: ClassVar[tuple[int, int]] = (4, 8)
    impl_sizes: ClassVar[tuple[int, int]] = (4, 4)

    def __init__(self, msix: Msix) -> None:
        self.msix = msix

    def read(self, offset: int, size: int) -> int:
        m = self.msix
        if m.pba_offset <= offset < m.pba_offset + len(m.pba):
            return m.pba_read(offset - m.pba_offset, size)
        if m.table_offset <= offset < m.table_offset + len(m.table):
            return m.table_read(offset - m.table_offset, size)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        m = self.msix
        if m.table_offset <= offset < m.table_offset + len(m.table):
            m.table_write(offset - m.table_offset, size, value)
        # the PBA is read-only
