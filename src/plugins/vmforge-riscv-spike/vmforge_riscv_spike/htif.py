"""Berkeley HTIF: the ``tohost``/``fromhost`` mailbox of spike and riscv-tests.

The guest writes a command word to ``tohost``:
``device << 56 | command << 48 | payload``.

- device 0, command 0, payload odd: exit with status ``payload >> 1``
  (riscv-tests: 1 is a pass, ``(test << 1) | 1`` a failure);
- device 0, command 0, payload even: ``payload`` points at ``magic_mem``, a
  syscall (``[number, a0, a1, a2, ...]``); ``write`` (64) to fd 1/2 and
  ``exit`` (93) are served, others answer ``-ENOSYS``; completion is signalled
  by writing 1 to ``fromhost``;
- device 1, command 1: put the character ``payload & 0xff`` on the console;
- device 1, command 0: read a character into ``fromhost`` when one arrives.

The mailbox lives in guest RAM and is polled between CPU slices, as spike
itself does; every guest address it is handed is checked against RAM.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from vmforge.chardev import CharBackend
from vmforge.errors import GuestMemoryError
from vmforge.memory import GuestMemory

__all__ = ["Htif"]

log = logging.getLogger("vmforge.spike.htif")

SYS_WRITE = 64
SYS_EXIT = 93
ENOSYS = 38
EFAULT = 14
MAX_WRITE = 1 << 20


class Htif:
    """The HTIF mailbox at ``tohost``/``fromhost`` of the loaded program."""

    def __init__(self, memory: GuestMemory, tohost: int, fromhost: int | None,
                 console: CharBackend | None, on_exit: Callable[[int], None]) -> None:
        self.memory = memory
        self.tohost = tohost
        self.fromhost = fromhost
        self.console = console
        self.on_exit = on_exit
        self._input: collections.deque[int] = collections.deque()
        self._want_char = False
        if console is not None:
            console.attach(self)

    # -- console input (CharFrontend) ------------------------------------------------------

    def can_receive(self) -> int:
        return 256 - len(self._input)

    def receive(self, data: bytes) -> None:
        self._input.extend(data)

    # -- the mailbox ---------------------------------------------------------------------------

    def _reply(self, value: int) -> None:
        if self.fromhost is not None:
            self.memory.write_u64(self.fromhost, value)

    def poll(self) -> bool:
        """Serve one command if ``tohost`` holds one; True if it did."""
        if self._want_char and self._input and self.fromhost is not None \
                and self.memory.read_u64(self.fromhost) == 0:
            self._want_char = False
            self._reply(1 << 56 | self._input.popleft())
            if self.console is not None:
                self.console.accept_input()
        value = self.memory.read_u64(self.tohost)
        if value == 0:
            return False
        self.memory.write_u64(self.tohost, 0)
        device, command, payload = value >> 56, (value >> 48) & 0xFF, value & ((1 << 48) - 1)
        if device == 0 and command == 0:
            if payload & 1:
                self.on_exit(payload >> 1)
            else:
                self._syscall(payload)
        elif device == 1 and command == 1:
            if self.console is not None:
                self.console.write(bytes([payload & 0xFF]))
            self._reply(1 << 56 | 1 << 48)
        elif device == 1 and command == 0:
            self._want_char = True
        else:
            log.warning("HTIF: unknown command %#x (device %d, command %d)", value, device,
                        command)
        return True

    def _syscall(self, magic: int) -> None:
        try:
            number, a0, a1, a2 = (self.memory.read_u64(magic + 8 * i) for i in range(4))
        except GuestMemoryError:
            log.warning("HTIF: syscall block at %#x is not in RAM", magic)
            return
        if number == SYS_EXIT:
            self.on_exit(a0)
            return
        ret = -ENOSYS
        if number == SYS_WRITE and a0 in (1, 2):
            try:
                data = self.memory.read(a1, min(a2, MAX_WRITE))
            except GuestMemoryError:
                ret = -EFAULT
            else:
                if self.console is not None:
                    self.console.write(data)
                ret = len(data)
        self.memory.write_u64(magic, ret & ((1 << 64) - 1))
        self._reply(1)
