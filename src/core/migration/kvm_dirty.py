"""The dirty log of a KVM machine's RAM: what the vCPUs wrote, from KVM's dirty
log (``KVM_MEM_LOG_DIRTY_PAGES`` on the RAM slots while migrating,
``KVM_GET_DIRTY_LOG`` each round, as QEMU's ``kvm_log_sync``), and what the
devices wrote through :class:`~vmforge.memory.GuestMemory` (virtqueue
completions: the marks the software path takes too).  The same interface as
:class:`~vmforge.migration.dirty.DirtyLog`: start, stop, take.
"""

from __future__ import annotations

from typing import Any

from vmforge.memory import GuestMemory
from vmforge.migration.dirty import PAGE_SIZE, DirtyLog

__all__ = ["KvmDirtyLog"]


class KvmDirtyLog(DirtyLog):
    """The dirty log of a KVM VM's writable memory slots plus the devices' writes."""

    def __init__(self, memory: GuestMemory, vm: Any) -> None:
        super().__init__(memory)
        self.vm = vm
        self._logging = False

    @property
    def active(self) -> bool:
        return self._logging

    def _ram_slots(self) -> list[Any]:
        return [ms for ms in self.vm.slots.values() if not ms.readonly]

    def _relog(self, on: bool) -> None:
        for ms in self._ram_slots():      # (a flags-only change keeps the memory mapped)
            self.vm.set_memory(ms.slot, ms.base, ms.view, log_dirty=on)

    def start(self) -> None:
        super().start()
        self._relog(True)
        self._logging = True

    def stop(self) -> None:
        self._relog(False)
        super().stop()
        self._logging = False

    def take(self) -> list[int]:
        pages = set(super().take())
        for ms in self._ram_slots():
            pages.update(ms.base + n * PAGE_SIZE for n in self.vm.dirty_pages(ms.slot))
        return sorted(pages)
