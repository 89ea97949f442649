"""Hooks from Python on a machine's harts, in the manner of unicorn's ``hook_add``.

``machine.hooks`` (every RISC-V board) holds them::

    calls = 0
    def count(hart, address, size):
        nonlocal calls
        calls += 1
    handle = machine.hooks.code(count, begin=sym["do_fork"], end=sym["do_fork"])
    ...
    machine.hooks.remove(handle)

What there is, and what each callback receives (``hart`` is the
:class:`~vmforge.accel.interp.RiscvHart`; its registers and memory may be read
and written, ``hart.pc = ...`` in a code hook jumps):

- ``code(cb, begin, end)``: ``cb(hart, address, size)`` before each instruction
  whose pc is in ``[begin, end]`` (a callback that returns an address is not
  called again while the hart runs straight on below it: what a block tracer
  returns after seeing a block's first instruction);
- ``block(cb, begin, end)``: ``cb(hart, address, size)`` when a basic block
  starts in ``[begin, end]`` (after a jump, a taken or untaken branch, a trap or
  entering the range; ``size``: bytes up to and including its control transfer,
  at most to the end of the page);
- ``mem_read(cb, begin, end)``: ``cb(hart, address, size, value)`` after each
  load from ``[begin, end]``; ``mem_write(cb, begin, end)``: the same before each
  store, with the value to be stored (virtual addresses, as the hart issues them;
  atomics report 0 as the value);
- ``interrupt(cb)``: ``cb(hart, cause, epc, tval)`` on every trap the hart takes
  (exceptions and interrupts: ``cause`` has bit 63 set for an interrupt);
- ``invalid_insn(cb)``: ``cb(hart, address, bits)`` on an illegal instruction;
  returning True means the callback emulated it (the hart goes on after it),
  else the trap is taken;
- ``mmio_unmapped(cb)``: ``cb(hart, address, size, is_write, value)`` on an
  access no device decodes (physical address); None lets it fault, an int is
  the value a read returns (a write is dropped).

Callbacks run on the machine's thread.  One pauses the machine with
``machine.pause()`` (``machine.resume()`` from elsewhere goes on) or ends it with
``machine.request_shutdown("user", 0)``; the hart stops at its next block
boundary.  An exception a callback raises stops the machine at once and
re-raises in the caller of ``machine.run()`` / ``machine.wait()``.

Cost: nothing when no hook is set.  Hooked code is not compiled and each hooked
instruction calls Python, but everything outside the hooked ranges keeps the
compiler; a memory hook makes only the pages it overlaps take the slow path.
Watchpoints of the gdbstub (``Z2``-``Z4``) are memory ranges of the same kind
that stop the hart instead of calling Python (:meth:`Hooks.watch`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from vmforge.debug.mmu import read_insn
from vmforge.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from vmforge.accel.interp import RiscvHart

__all__ = ["WATCH_ACCESS", "WATCH_READ", "WATCH_WRITE", "Hook", "Hooks"]

LAST = (1 << 64) - 1
WATCH_READ, WATCH_WRITE = 1, 2
WATCH_ACCESS = WATCH_READ | WATCH_WRITE
_STOP = 4
_MAX_RANGES = 64
_RANGE_KINDS = ("code", "block", "mem_read", "mem_write")


class Hook(Record):
    """A handle: what :meth:`Hooks.remove` takes (equal to itself only, hashable)."""

    __slots__ = __match_args__ = ("kind", "callback", "begin", "end", "once")
    kind: str
    callback: Callable[..., Any]
    begin: int
    end: int
    once: bool                  # tracers: a block once per state is enough

    __eq__ = object.__eq__      # (a dataclass with eq=False)
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __init__(self, kind: str, callback: Callable[..., Any], begin: int = 0,
                 end: int = LAST, once: bool = False) -> None:
        self.kind = kind
        self.callback = callback
        self.begin = begin
        self.end = end
        self.once = once

    def covers(self, first: int, last: int) -> bool:
        return self.begin <= last and self.end >= first


def _ends_block(bits: int) -> bool:
    """Whether the instruction ``bits`` transfers control (a block's last one)."""
    if bits & 3 != 3:                       # compressed
        q, f3 = bits & 3, (bits >> 13) & 7
        if q == 1 and f3 in (5, 6, 7):      # c.j, c.beqz, c.bnez
            return True
        return (q == 2 and f3 == 4 and (bits >> 2) & 0x1F == 0 and (bits >> 7) & 0x1F != 0) \
            or bits & 0xFFFF == 0x9002      # c.jr, c.jalr; c.ebreak
    opcode = bits & 0x7F
    return opcode in (0x63, 0x6F, 0x67) or (opcode == 0x73 and (bits >> 12) & 7 == 0) \
        or (opcode == 0x0F and (bits >> 12) & 7 == 1)       # system, fence.i


class _HartState:
    __slots__ = ("block_end",)

    def __init__(self) -> None:
        self.block_end = 0      # where the current basic block ends


def _least(quiet: int | None, until: int | None) -> int | None:
    """Two callbacks' quiet ends combined: None (call at every instruction) wins."""
    return None if quiet is None or until is None else min(quiet, int(until))


class Hooks:
    """The hooks and watchpoints of a set of harts (one machine's)."""

    def __init__(self, harts: Sequence[RiscvHart], memory: Any) -> None:
        self.harts = list(harts)
        self.memory = memory
        self._hooks: list[Hook] = []
        self._by_kind: dict[str, tuple[Hook, ...]] = {}
        self._watches: dict[tuple[int, int, int], int] = {}   # (begin, end, kind): refs
        self._blocks = {id(h): _HartState() for h in self.harts}
        self._ids = itertools.count()

    # -- adding and removing ----------------------------------------------------------

    def code(self, callback: Callable[[RiscvHart, int, int], Any], begin: int = 0,
             end: int = LAST) -> Hook:
        return self._add(Hook("code", callback, begin, end))

    def block(self, callback: Callable[[RiscvHart, int, int], Any], begin: int = 0,
              end: int = LAST) -> Hook:
        return self._add(Hook("block", callback, begin, end))

    def tracer(self, callback: Callable[[RiscvHart, int, int, bool], int | None],
               begin: int = 0, end: int = LAST, *, once: bool = False) -> Hook:
        """A block tracer: ``cb(hart, address, size, sequential)`` before an
        instruction in ``[begin, end]`` that does not follow the last one run, or
        past the address the previous call returned (the end of the block it saw;
        None: call at every instruction).  ``once``: a block seen is not shown
        again when the hart comes back to it in the same privilege, FS and satp
        (what ``-d in_asm`` needs, not ``exec``).  What ``-d in_asm/exec`` use."""
        hook = Hook("tracer", callback, begin, end)
        hook.once = once
        return self._add(hook)

    def mem_read(self, callback: Callable[[RiscvHart, int, int, int], Any], begin: int = 0,
                 end: int = LAST) -> Hook:
        return self._add(Hook("mem_read", callback, begin, end))

    def mem_write(self, callback: Callable[[RiscvHart, int, int, int], Any], begin: int = 0,
                  end: int = LAST) -> Hook:
        return self._add(Hook("mem_write", callback, begin, end))

    def interrupt(self, callback: Callable[[RiscvHart, int, int, int], Any]) -> Hook:
        return self._add(Hook("interrupt", callback))

    def invalid_insn(self, callback: Callable[[RiscvHart, int, int], bool | None]) -> Hook:
        return self._add(Hook("invalid_insn", callback))

    def mmio_unmapped(self, callback: Callable[[RiscvHart, int, int, bool, int], int | None],
                      ) -> Hook:
        return self._add(Hook("mmio_unmapped", callback))

    def remove(self, hook: Hook) -> None:
        """Remove a hook (one that is not there: ValueError)."""
        self._hooks.remove(hook)
        self._sync()

    def clear(self) -> None:
        """Remove every hook (watchpoints stay)."""
        self._hooks.clear()
        self._sync()

    def __len__(self) -> int:
        return len(self._hooks)

    def _add(self, hook: Hook) -> Hook:
        if not callable(hook.callback):
            raise TypeError(f"{hook.kind} hook: {hook.callback!r} is not callable")
        hook.begin &= LAST
        hook.end &= LAST
        if hook.end < hook.begin:
            raise ValueError(f"{hook.kind} hook: empty range {hook.begin:#x}..{hook.end:#x}")
        self._hooks.append(hook)
        try:
            self._sync()
        except ValueError:
            self._hooks.remove(hook)
            raise
        return hook

    # -- watchpoints (the gdbstub's) ------------------------------------------------------

    def watch(self, begin: int, end: int, kind: int) -> None:
        """Stop the hart before an access of ``kind`` (WATCH_READ, _WRITE, _ACCESS)
        touches ``[begin, end]``: ``StopReason.WATCHPOINT``."""
        key = (begin & LAST, end & LAST, kind)
        self._watches[key] = self._watches.get(key, 0) + 1
        try:
            self._sync()
        except ValueError:
            self.unwatch(begin, end, kind)
            raise

    def unwatch(self, begin: int, end: int, kind: int) -> bool:
        key = (begin & LAST, end & LAST, kind)
        if key not in self._watches:
            return False
        self._watches[key] -= 1
        if not self._watches[key]:
            del self._watches[key]
        self._sync()
        return True

    def watches(self) -> list[tuple[int, int, int]]:
        return list(self._watches)

    def watch_matching(self, address: int, size: int, is_write: bool,
                       ) -> tuple[int, int, int] | None:
        """The watchpoint an access stopped on (the first that covers it)."""
        want = WATCH_WRITE if is_write else WATCH_READ
        last = address + max(size, 1) - 1
        for key in self._watches:
            begin, end, kind = key
            if kind & want and begin <= last and end >= address:
                return key
        return None

    # -- the harts' side ---------------------------------------------------------------

    def _sync(self) -> None:
        """Give every hart the ranges and callbacks the hooks need."""
        kinds = {h.kind for h in self._hooks}
        self._by_kind = {k: tuple(h for h in self._hooks if h.kind == k) for k in kinds}
        mem = [(h.begin, h.end, WATCH_READ if h.kind == "mem_read" else WATCH_WRITE)
               for h in self._hooks if h.kind in ("mem_read", "mem_write")]
        mem += [(b, e, k | _STOP) for (b, e, k) in self._watches]
        code = [(h.begin, h.end) for h in self._hooks if h.kind in ("code", "block", "tracer")]
        if len(mem) > _MAX_RANGES or len(code) > _MAX_RANGES:
            raise ValueError(f"at most {_MAX_RANGES} hooked ranges of each kind")
        for hart in self.harts:
            hart._set_watch(mem, self._mem_cb(hart) if mem else None)
            hart._set_code_hooks(code, self._code_cb(hart) if code else None)
            hart._set_event_hooks(
                trap=self._trap_cb(hart) if "interrupt" in kinds else None,
                illegal=self._illegal_cb(hart) if "invalid_insn" in kinds else None,
                unmapped=self._unmapped_cb(hart) if "mmio_unmapped" in kinds else None)
            self._blocks[id(hart)].block_end = 0

    def _of(self, kind: str) -> tuple[Hook, ...]:
        return self._by_kind.get(kind, ())

    def _mem_cb(self, hart: RiscvHart) -> Callable[[int, int, bool, int], None]:
        def on_access(address: int, size: int, is_write: bool, value: int) -> None:
            kind = "mem_write" if is_write else "mem_read"
            last = address + size - 1
            for hook in self._of(kind):
                if hook.covers(address, last):
                    hook.callback(hart, address, size, value)
        return on_access

    def _code_cb(self, hart: RiscvHart) -> Callable[[int, int, bool], int | None]:
        state = self._blocks[id(hart)]

        def on_insn(pc: int, size: int, sequential: bool) -> int | None:
            # returns where the hart may run on straight without calls (every
            # callback that ran agreed), or None: call again at the next instruction
            quiet: int | None = LAST
            once = True                 # every callback that ran needs this block once
            blocks = self._of("block")
            if blocks and (not sequential or pc >= state.block_end):     # a new block
                state.block_end = pc + self._block_size(hart, pc)
                for hook in blocks:
                    if hook.begin <= pc <= hook.end:
                        hook.callback(hart, pc, state.block_end - pc)
            if blocks:
                quiet = state.block_end
                once = False
            for hook in self._of("tracer"):
                if hook.begin <= pc <= hook.end:
                    quiet = _least(quiet, hook.callback(hart, pc, size, sequential))
                    once = once and hook.once
            for hook in self._of("code"):
                if hook.begin <= pc <= hook.end:
                    quiet = _least(quiet, hook.callback(hart, pc, size))
                    once = False
            if quiet is None or quiet == LAST or quiet <= pc:
                return None
            return -quiet if once else quiet
        return on_insn

    def _trap_cb(self, hart: RiscvHart) -> Callable[[int, int, int], None]:
        def on_trap(cause: int, epc: int, tval: int) -> None:
            for hook in self._of("interrupt"):
                hook.callback(hart, cause, epc, tval)
        return on_trap

    def _illegal_cb(self, hart: RiscvHart) -> Callable[[int, int], bool]:
        def on_illegal(pc: int, bits: int) -> bool:
            handled = False
            for hook in self._of("invalid_insn"):
                handled = bool(hook.callback(hart, pc, bits)) or handled
            return handled
        return on_illegal

    def _unmapped_cb(self, hart: RiscvHart) -> Callable[[int, int, bool, int], int | None]:
        def on_unmapped(address: int, size: int, is_write: bool, value: int) -> int | None:
            result = None
            for hook in self._of("mmio_unmapped"):
                answer = hook.callback(hart, address, size, is_write, value)
                if answer is not None and answer is not False and result is None:
                    result = 0 if answer is True else int(answer)
            return result
        return on_unmapped

    # -- reading code as the hart fetches it ----------------------------------------------

    def _block_size(self, hart: RiscvHart, pc: int) -> int:
        """Bytes from ``pc`` through the next control transfer, within its page."""
        at = pc
        page_end = (pc | 0xFFF) + 1
        while at < page_end:
            raw = read_insn(hart, self.memory, at)
            if raw is None:
                break
            at += len(raw)
            if _ends_block(int.from_bytes(raw, "little")):
                break
        return max(at - pc, 2)
