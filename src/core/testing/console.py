"""Driving a program's console from tests: QEMU (``-nographic``) or any child
whose stdin/stdout is a serial line."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

__all__ = ["ProcessConsole"]


class ProcessConsole:
    """A child process's stdin/stdout as a console (QEMU's ``-nographic`` serial),
    with :class:`~vmforge.chardev.BufferChar`'s ``feed``/``wait_for``/``output``,
    so one script drives vmforge and QEMU alike."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.buf = bytearray()
        self.cursor = 0
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self.cond:
                self.buf += chunk
                self.cond.notify_all()
        with self.cond:                 # end of output: waiters look at the process
            self.eof = True
            self.cond.notify_all()

    def feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    @property
    def output(self) -> bytes:
        with self.cond:
            return bytes(self.buf)

    def wait_for(self, pattern: bytes | re.Pattern[bytes], timeout: float = 10.0,
                 ) -> re.Match[bytes]:
        if isinstance(pattern, bytes):
            pattern = re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self.cond:
            while (m := pattern.search(self.buf, self.cursor)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise TimeoutError(f"{pattern.pattern!r} not seen in {timeout}s: "
                                       f"{bytes(self.buf[-300:])!r}")
                self.cond.wait(min(left, 1.0))
            self.cursor = m.end()
            return m

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
