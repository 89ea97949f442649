"""The reference chain walker: the rules of :mod:`vmforge._fast.vring` in plain Python.

This is the specification the compiled walker is tested against (the fuzz
tests run both on the same random rings and compare) and the baseline of
``benchmarks/bench_vring.py``.  It reads guest memory through
:class:`~vmforge.memory.GuestMemory` and returns the same results: a chain's
``(head, ring slots, [(address, length, writable), ...])`` or a
:class:`ReferenceRingError` carrying the compiled walker's error code.

It only walks (``pop``); it keeps ``last_avail``/wrap state like a device and
does not publish used entries.  Clarity over speed: do not use it for I/O.
"""

from __future__ import annotations

from typing import Any

from vmforge._fast.vring import ERROR_TEXT

__all__ = ["ReferenceRingError", "ReferenceWalker"]

# error codes (the same numbers as vmforge._fast.vring)
E_AVAIL_IDX, E_INUSE, E_HEAD_RANGE, E_HEAD_BUSY, E_TOO_LONG, E_NEXT_RANGE = 2, 3, 4, 5, 6, 7
E_INDIRECT_FEATURE, E_INDIRECT_NESTED, E_INDIRECT_NEXT, E_INDIRECT_SIZE = 8, 9, 10, 11
E_INDIRECT_ADDR, E_ZERO_LEN, E_ORDER, E_ADDR_WRAP, E_ADDR, E_ROM = 12, 13, 14, 15, 16, 17
E_TOTAL_LEN, E_TOO_MANY, E_ID_BUSY = 18, 19, 21

F_NEXT, F_WRITE, F_INDIRECT, F_AVAIL, F_USED = 1, 2, 4, 1 << 7, 1 << 15
MAX_INDIRECT = 65536


class ReferenceRingError(Exception):
    def __init__(self, code: int, desc: int = -1) -> None:
        self.code = code
        self.desc = desc
        super().__init__(ERROR_TEXT.get(code, str(code)))


def _desc(mem: Any, addr: int) -> tuple[int, int, int, int]:
    raw = mem.read(addr, 16)
    return (int.from_bytes(raw[0:8], "little"), int.from_bytes(raw[8:12], "little"),
            int.from_bytes(raw[12:14], "little"), int.from_bytes(raw[14:16], "little"))


class ReferenceWalker:
    """Pops chains from a split or packed ring in guest memory, checking every rule."""

    def __init__(self, memory: Any, size: int, desc: int, driver: int, device: int, *,
                 packed: bool = False, indirect: bool = False, max_segments: int = 1024) -> None:
        self.mem = memory
        self.size = size
        self.desc, self.driver, self.device = desc, driver, device
        self.packed = packed
        self.indirect = indirect
        self.max_segments = max_segments
        self.last_avail = 0
        self.avail_wrap = True
        self.busy: set[int] = set()

    # -- rules shared by both layouts ------------------------------------------------------

    def _check_range(self, addr: int, length: int, writable: bool) -> int:
        if addr + length > 1 << 64:
            return E_ADDR_WRAP
        pos, end = addr, addr + length
        while pos < end:
            region = self.mem.region_at(pos)
            if region is None:
                return E_ADDR
            if writable and region.readonly:
                return E_ROM
            pos = region.end
        return 0

    def _add(self, segs: list[tuple[int, int, bool]], state: dict[str, Any], addr: int,
             length: int, writable: bool, index: int) -> None:
        if length == 0:
            raise ReferenceRingError(E_ZERO_LEN, index)
        if not writable and state["seen_write"]:
            raise ReferenceRingError(E_ORDER, index)
        state["seen_write"] |= writable
        rc = self._check_range(addr, length, writable)
        if rc:
            raise ReferenceRingError(rc, index)
        state["total"] += length
        if state["total"] > 0xFFFFFFFF:
            raise ReferenceRingError(E_TOTAL_LEN, index)
        if len(segs) >= self.max_segments:
            raise ReferenceRingError(E_TOO_MANY, index)
        segs.append((addr, length, writable))

    def _indirect(self, addr: int, length: int, segs: list[tuple[int, int, bool]],
                  state: dict[str, Any], index: int) -> None:
        if length == 0 or length % 16 or length // 16 > MAX_INDIRECT:
            raise ReferenceRingError(E_INDIRECT_SIZE, index)
        rc = self._check_range(addr, length, False)
        if rc == E_ADDR_WRAP:
            raise ReferenceRingError(rc, index)
        region = self.mem.region_at(addr)
        if rc or region is None or addr + length > region.end:
            raise ReferenceRingError(E_INDIRECT_ADDR, index)
        count = length // 16
        i, ttl = 0, count
        while True:
            if ttl == 0:
                raise ReferenceRingError(E_TOO_LONG, i)
            ttl -= 1
            a, n, x, y = _desc(self.mem, addr + 16 * i)
            flags = y if self.packed else x
            if flags & F_INDIRECT:
                raise ReferenceRingError(E_INDIRECT_NESTED, i)
            self._add(segs, state, a, n, bool(flags & F_WRITE), i)
            if self.packed:
                i += 1
                if i == count:
                    return
                continue
            if not flags & F_NEXT:
                return
            if y >= count:
                raise ReferenceRingError(E_NEXT_RANGE, i)
            i = y

    # -- popping ---------------------------------------------------------------------------

    def pop(self) -> tuple[int, int, list[tuple[int, int, bool]]] | None:
        """``(head or buffer id, ring slots, segments)``, None when nothing is available."""
        return self._pop_packed() if self.packed else self._pop_split()

    def _pop_split(self) -> tuple[int, int, list[tuple[int, int, bool]]] | None:
        avail_idx = self.mem.read_u16(self.driver + 2)
        n = (avail_idx - self.last_avail) & 0xFFFF
        if n == 0:
            return None
        if n > self.size:
            raise ReferenceRingError(E_AVAIL_IDX)
        if len(self.busy) >= self.size:
            raise ReferenceRingError(E_INUSE)
        head = self.mem.read_u16(self.driver + 4 + 2 * (self.last_avail % self.size))
        if head >= self.size:
            raise ReferenceRingError(E_HEAD_RANGE, head)
        if head in self.busy:
            raise ReferenceRingError(E_HEAD_BUSY, head)
        segs: list[tuple[int, int, bool]] = []
        state = {"seen_write": False, "total": 0}
        i, ttl = head, self.size
        while True:
            if ttl == 0:
                raise ReferenceRingError(E_TOO_LONG, i)
            ttl -= 1
            addr, length, flags, nxt = _desc(self.mem, self.desc + 16 * i)
            if flags & F_INDIRECT:
                if not self.indirect:
                    raise ReferenceRingError(E_INDIRECT_FEATURE, i)
                if flags & F_NEXT:
                    raise ReferenceRingError(E_INDIRECT_NEXT, i)
                self._indirect(addr, length, segs, state, i)
                break
            self._add(segs, state, addr, length, bool(flags & F_WRITE), i)
            if not flags & F_NEXT:
                break
            if nxt >= self.size:
                raise ReferenceRingError(E_NEXT_RANGE, i)
            i = nxt
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        self.busy.add(head)
        return head, 1, segs

    def _pop_packed(self) -> tuple[int, int, list[tuple[int, int, bool]]] | None:
        flags = self.mem.read_u16(self.desc + 16 * self.last_avail + 14)
        if bool(flags & F_AVAIL) != self.avail_wrap or bool(flags & F_USED) == self.avail_wrap:
            return None
        if len(self.busy) >= self.size:
            raise ReferenceRingError(E_INUSE)
        segs: list[tuple[int, int, bool]] = []
        state = {"seen_write": False, "total": 0}
        i, count, bufid = self.last_avail, 0, 0
        while True:
            if count == self.size:
                raise ReferenceRingError(E_TOO_LONG, i)
            addr, length, bufid, flags = _desc(self.mem, self.desc + 16 * i)
            count += 1
            if flags & F_INDIRECT:
                if not self.indirect:
                    raise ReferenceRingError(E_INDIRECT_FEATURE, i)
                if flags & F_NEXT:
                    raise ReferenceRingError(E_INDIRECT_NEXT, i)
                self._indirect(addr, length, segs, state, i)
                break
            self._add(segs, state, addr, length, bool(flags & F_WRITE), i)
            if not flags & F_NEXT:
                break
            i = (i + 1) % self.size
        if bufid in self.busy:
            raise ReferenceRingError(E_ID_BUSY, i)
        self.last_avail += count
        if self.last_avail >= self.size:
            self.last_avail -= self.size
            self.avail_wrap = not self.avail_wrap
        self.busy.add(bufid)
        return bufid, count, segs

    def complete(self, head: int) -> None:
        """Forget ``head`` as in flight (the device pushed it)."""
        self.busy.discard(head)
