"""ProcessConsole (vmforge.testing.console) as a terminal: it answers a cursor
position query in the child's output, also one split between two writes, and
only when asked to."""

from __future__ import annotations

import re
import sys

from vmforge.testing.console import CURSOR_REPORT, ProcessConsole

# the child writes a prompt and a query (in two pieces when argv[1] is "split"),
# then reports what came back on stdin within half a second
CHILD = r"""
import os, select, sys, time
os.write(1, b"prompt> ")
if sys.argv[1] == "split":
    os.write(1, b"\x1b[")
    time.sleep(0.2)
    os.write(1, b"6n")
else:
    os.write(1, b"\x1b[6n")
got = os.read(0, 64) if select.select([0], [], [], 0.5)[0] else b""
os.write(1, b"got=" + got.hex().encode() + b".\n")
"""


def _reply(how: str, terminal: bool) -> tuple[bytes, int]:
    con = ProcessConsole([sys.executable, "-c", CHILD, how], terminal=terminal)
    try:
        m = con.wait_for(re.compile(rb"got=([0-9a-f]*)\."), timeout=30)
        return bytes.fromhex(m.group(1).decode()), con.answered
    finally:
        con.close()


def test_a_query_is_answered_as_a_terminal_does():
    assert _reply("whole", True) == (CURSOR_REPORT, 1)


def test_a_query_split_between_two_writes_is_answered_once():
    assert _reply("split", True) == (CURSOR_REPORT, 1)


def test_no_answer_unless_asked():
    assert _reply("whole", False) == (b"", 0)
