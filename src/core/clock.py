"""Guest time: one clock per machine, and timers on it.

:class:`VirtualClock` runs with host monotonic time while the machine runs and
stands still while it is paused.  :class:`TimerQueue` holds deadlines on that
clock; the run loop asks for the next deadline (how long a halted CPU may
sleep) and fires the due ones.  Timer callbacks run on the machine's thread.

That is QEMU's default: a guest second is a host second, idle CPUs sleep until
the next deadline.  :class:`Icount` is QEMU's ``-icount shift=N,sleep=on|off``:
CPU time counts retired instructions (``2**N`` ns each), deterministic for
tests and record/replay; with ``sleep=off`` idle time is skipped at once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from vmforge.record import FrozenRecord

__all__ = ["Icount", "Timer", "TimerQueue", "VirtualClock"]


class Icount(FrozenRecord):
    """Instruction-counted guest time (QEMU's ``-icount``)."""

    __slots__ = __match_args__ = ("shift", "sleep")
    shift: int              #: each instruction takes 2**shift ns of guest time
    sleep: bool             #: idle CPUs wait in host time (False: time jumps ahead)

    def __init__(self, shift: int = 0, sleep: bool = True) -> None:
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "sleep", sleep)

    MAX_SHIFT = 10          # as QEMU

    @classmethod
    def parse(cls, text: str) -> Icount:
        """``-icount 3``, ``-icount shift=3,sleep=off`` (``shift=auto`` is refused)."""
        from vmforge.config import parse_opts

        opts = parse_opts(text, implied="shift")
        unknown = set(opts) - {"shift", "sleep"}
        if unknown:
            raise ValueError(f"-icount: unknown option {sorted(unknown)[0]!r} "
                             "(shift=N, sleep=on|off)")
        shift_text = opts.get("shift", "0")
        if not shift_text.isdigit() or int(shift_text) > cls.MAX_SHIFT:
            raise ValueError(f"-icount: shift={shift_text!r}: a number from 0 to "
                             f"{cls.MAX_SHIFT} (adaptive shift=auto is not supported)")
        sleep_text = opts.get("sleep", "on")
        if sleep_text not in ("on", "off"):
            raise ValueError(f"-icount: sleep={sleep_text!r} is not on/off")
        return cls(int(shift_text), sleep_text == "on")

    def ticks_per_instruction(self, tick_ns: int) -> tuple[int, int]:
        """(mul, div): a timer of ``tick_ns`` per tick advances mul/div per instruction."""
        from math import gcd

        mul, div = 1 << self.shift, tick_ns
        g = gcd(mul, div)
        return mul // g, div // g


class VirtualClock:
    """Nanoseconds of guest time since the clock was made (0 while never started)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base = 0          # guest ns accumulated before the current run
        self._started: int | None = None

    def now_ns(self) -> int:
        started = self._started
        if started is None:
            return self._base
        return self._base + time.monotonic_ns() - started

    @property
    def running(self) -> bool:
        return self._started is not None

    def resume(self) -> None:
        with self._lock:
            if self._started is None:
                self._started = time.monotonic_ns()

    def pause(self) -> None:
        with self._lock:
            if self._started is not None:
                self._base += time.monotonic_ns() - self._started
                self._started = None

    def origin_ns(self) -> int | None:
        """The ``time.monotonic_ns()`` at which this running clock read 0 (None:
        paused): guest ns = monotonic ns - origin.  CPUs that read the host
        clock themselves follow the machine's clock with it."""
        started = self._started
        return None if started is None else started - self._base

    def advance(self, ns: int) -> None:
        """Move a paused clock forward (for tests and deterministic runs)."""
        with self._lock:
            if self._started is not None:
                raise RuntimeError("advance() needs a paused clock")
            self._base += ns


class Timer:
    """A one-shot deadline; ``cancel()`` it or ``arm()`` it again."""

    __slots__ = ("_queue", "_seq", "callback", "deadline")

    def __init__(self, queue: TimerQueue, callback: Callable[[], None]) -> None:
        self._queue = queue
        self.callback = callback
        self.deadline: int | None = None
        self._seq = -1

    def arm(self, deadline_ns: int) -> None:
        self._queue._arm(self, deadline_ns)

    def arm_in(self, delay_ns: int) -> None:
        self.arm(self._queue.clock.now_ns() + delay_ns)

    def cancel(self) -> None:
        self.deadline = None
        self._seq = -1

    @property
    def pending(self) -> bool:
        return self.deadline is not None


class TimerQueue:
    """Deadlines on a :class:`VirtualClock`."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Timer]] = []
        self._counter = itertools.count()

    def timer(self, callback: Callable[[], None]) -> Timer:
        return Timer(self, callback)

    def _arm(self, timer: Timer, deadline: int) -> None:
        timer.deadline = deadline
        timer._seq = next(self._counter)
        heapq.heappush(self._heap, (deadline, timer._seq, timer))

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and heap[0][2]._seq != heap[0][1]:
            heapq.heappop(heap)

    def next_deadline(self) -> int | None:
        """The earliest armed deadline, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: int | None = None) -> int:
        """Fire every timer whose deadline has passed; returns how many fired."""
        now = self.clock.now_ns() if now is None else now
        fired = 0
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return fired
            _, _, timer = heapq.heappop(self._heap)
            timer.deadline = None
            timer._seq = -1
            timer.callback()
            fired += 1
