"""Driving a program's console from tests: QEMU (``-nographic``) or any child
whose stdin/stdout is a serial line."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

__all__ = ["ProcessConsole"]


#: a terminal's cursor position query (DSR 6) and the report it gets back
CURSOR_QUERY = b"\x1b[6n"
CURSOR_REPORT = b"\x1b[1;1R"


class ProcessConsole:
    """A child process's stdin/stdout as a console (QEMU's ``-nographic`` serial),
    with :class:`~vmforge.chardev.BufferChar`'s ``feed``/``wait_for``/``output``,
    so one script drives vmforge and QEMU alike.

    ``terminal``: answer each cursor position query in the output at once, as a
    terminal does.  busybox's line editor asks after every prompt; when Enter comes
    before the answer it sleeps 20 ms so that a late answer does not reach the
    command, so without one every line typed takes 20 ms more than a user at a
    terminal sees.  The answer is written before a ``wait_for`` that saw the query
    returns."""

    def __init__(self, argv: list[str], terminal: bool = False) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.buf = bytearray()
        self.cursor = 0
        self.cond = threading.Condition()
        self.eof = False
        self.terminal = terminal
        self.answered = 0               # cursor queries answered
        self._scanned = 0               # bytes of buf looked at for queries
        self._write = threading.Lock()  # (the pump answers while the caller feeds)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self.cond:
                self.buf += chunk
                if self.terminal:
                    self._answer()
                self.cond.notify_all()
        with self.cond:                 # end of output: waiters look at the process
            self.eof = True
            self.cond.notify_all()

    def _answer(self) -> None:
        """Report a cursor position for each query that arrived (one may have been
        split between two reads: the last bytes looked at are looked at again)."""
        queries = self.buf.count(CURSOR_QUERY, max(self._scanned - len(CURSOR_QUERY) + 1, 0))
        self._scanned = len(self.buf)
        if queries:
            try:
                self.feed(CURSOR_REPORT * queries)
            except (BrokenPipeError, ValueError):
                return                  # (the process has gone, or its stdin closed)
            self.answered += queries

    def feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self._write:
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
