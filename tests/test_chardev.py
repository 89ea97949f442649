"""Character back-ends: flow control, BufferChar, FileChar, StdioChar, -serial specs."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

from vmforge.chardev import (
    BufferChar,
    CharBackend,
    ChardevError,
    CharFrontend,
    FileChar,
    NullChar,
    StdioChar,
    chardev_from_spec,
)


class Sink:
    """A frontend with a settable amount of room, recording what it gets."""

    def __init__(self, room: int = 1 << 30) -> None:
        self.room = room
        self.got = bytearray()
        self.events: list[bytes | str] = []
        self.calls = 0

    def can_receive(self) -> int:
        return self.room

    def receive(self, data: bytes) -> None:
        assert len(data) <= self.room, "back-end pushed more than can_receive allowed"
        self.calls += 1
        self.room -= len(data)
        self.got += data
        self.events.append(bytes(data))

    def receive_break(self) -> None:
        self.room -= 1
        self.events.append("BREAK")


# -- flow control ------------------------------------------------------------------------


def test_sink_satisfies_the_frontend_protocol() -> None:
    assert isinstance(Sink(), CharFrontend)


def test_input_beyond_can_receive_stays_queued() -> None:
    chardev = BufferChar()
    sink = Sink(room=3)
    chardev.attach(sink)
    chardev.feed(b"0123456789")
    assert bytes(sink.got) == b"012"
    assert chardev.pending_input == 7
    chardev.accept_input()  # no room yet: nothing moves
    assert bytes(sink.got) == b"012"
    sink.room = 4
    chardev.accept_input()
    assert bytes(sink.got) == b"0123456"
    sink.room = 100
    chardev.accept_input()
    assert bytes(sink.got) == b"0123456789"
    assert chardev.pending_input == 0


def test_input_before_attach_is_delivered_on_attach() -> None:
    chardev = BufferChar()
    chardev.feed(b"early")
    assert chardev.pending_input == 5
    sink = Sink()
    chardev.attach(sink)
    assert bytes(sink.got) == b"early"
    chardev.detach()
    chardev.feed(b"late")
    assert bytes(sink.got) == b"early"
    assert chardev.pending_input == 4


def test_breaks_keep_their_place_among_bytes() -> None:
    chardev = BufferChar()
    sink = Sink(room=0)
    chardev.attach(sink)
    chardev.feed(b"ab")
    chardev.send_break()
    chardev.feed(b"cd")
    sink.room = 100
    chardev.accept_input()
    assert sink.events == [b"ab", "BREAK", b"cd"]


def test_break_waits_for_room() -> None:
    chardev = BufferChar()
    sink = Sink(room=2)
    chardev.attach(sink)
    chardev.feed(b"xy")
    chardev.send_break()
    assert sink.events == [b"xy"]
    sink.room = 1
    chardev.accept_input()
    assert sink.events == [b"xy", "BREAK"]


def test_break_to_a_frontend_without_break_support_is_dropped() -> None:
    class Plain:
        def __init__(self) -> None:
            self.got = b""

        def can_receive(self) -> int:
            return 10

        def receive(self, data: bytes) -> None:
            self.got += data

    chardev = BufferChar()
    plain = Plain()
    chardev.attach(plain)
    chardev.feed(b"a")
    chardev.send_break()
    chardev.feed(b"b")
    assert plain.got == b"ab"


def test_concurrent_feeders_lose_nothing_and_keep_each_ones_order() -> None:
    chardev = BufferChar()
    lock = threading.Lock()
    got = bytearray()

    class Slow:
        def can_receive(self) -> int:
            return 7

        def receive(self, data: bytes) -> None:
            with lock:
                got.extend(data)

    chardev.attach(Slow())
    writers = [bytes([65 + i]) * 2000 for i in range(4)]
    threads = [threading.Thread(target=lambda w=w: [chardev.feed(w[j:j + 13])
                                                     for j in range(0, len(w), 13)])
               for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8000
    assert sorted(set(got)) == [65, 66, 67, 68]
    assert chardev.pending_input == 0


def test_frontend_that_reads_back_from_inside_receive() -> None:
    # A device may call accept_input while input is being delivered (e.g. a
    # guest read on another thread); delivery must not recurse or reorder.
    chardev = BufferChar()
    got = bytearray()

    class Reentrant:
        def can_receive(self) -> int:
            return 1

        def receive(self, data: bytes) -> None:
            got.extend(data)
            chardev.accept_input()

    chardev.attach(Reentrant())
    chardev.feed(b"abcdef")
    assert bytes(got) == b"abcdef"


def test_dispatch_moves_delivery_to_the_machines_loop() -> None:
    chardev = BufferChar()
    sink = Sink()
    chardev.attach(sink)
    scheduled = []
    chardev.dispatch = scheduled.append
    chardev.feed(b"abc")
    chardev.send_break()
    assert sink.events == [] and len(scheduled) == 2
    for job in scheduled:
        job()
    assert sink.events == [b"abc", "BREAK"]


# -- BufferChar output -------------------------------------------------------------------


def test_buffer_output_and_wait_for() -> None:
    chardev = BufferChar()
    assert chardev.write(b"login: ") == 7
    chardev.write(b"root\r\n# ")
    assert chardev.output == b"login: root\r\n# "
    match = chardev.wait_for(b"login:", timeout=1)
    assert match.span() == (0, 6)
    match = chardev.wait_for(re.compile(rb"(\w+)\r\n"), timeout=1)
    assert match.group(1) == b"root"
    with pytest.raises(TimeoutError, match="login"):
        chardev.wait_for(b"login:", timeout=0.05)  # already consumed


def test_wait_for_wakes_on_output_from_another_thread() -> None:
    chardev = BufferChar()
    timer = threading.Timer(0.05, chardev.write, args=(b"Welcome to Buildroot\n",))
    timer.start()
    start = time.monotonic()
    match = chardev.wait_for(re.compile(rb"Welcome to (\w+)"), timeout=5)
    timer.join()
    assert match.group(1) == b"Buildroot"
    assert time.monotonic() - start < 4


def test_clear_forgets_output() -> None:
    chardev = BufferChar()
    chardev.write(b"old")
    chardev.clear()
    chardev.write(b"new")
    assert chardev.output == b"new"
    assert chardev.wait_for(b"new", 1).start() == 0


def test_closed_backend_drops_output() -> None:
    chardev = BufferChar()
    chardev.close()
    assert chardev.write(b"x") == 0
    assert chardev.output == b""


# -- NullChar, FileChar ---------------------------------------------------------------------


def test_null_takes_everything() -> None:
    null = NullChar()
    assert null.write(b"abc") == 3
    sink = Sink()
    null.attach(sink)
    assert sink.got == b""


def test_file_char_writes_and_truncates_like_qemu(tmp_path) -> None:
    path = tmp_path / "serial.log"
    path.write_bytes(b"stale contents\n")
    with FileChar(path) as chardev:
        chardev.write(b"line 1\n")
        assert path.read_bytes() == b"line 1\n"  # flushed at the newline
        chardev.write(b"partial")
    assert path.read_bytes() == b"line 1\npartial"  # flushed on close
    with FileChar(path, append=True) as chardev:
        chardev.write(b"!")
    assert path.read_bytes() == b"line 1\npartial!"


def test_file_char_reports_a_bad_path(tmp_path) -> None:
    with pytest.raises(ChardevError, match="cannot open"):
        FileChar(tmp_path / "missing-dir" / "log")


# -- specs -------------------------------------------------------------------------------------


def test_chardev_from_spec(tmp_path) -> None:
    assert isinstance(chardev_from_spec("null"), NullChar)
    assert chardev_from_spec("none") is None
    path = tmp_path / "out.txt"
    chardev = chardev_from_spec(f"file:{path}")
    assert isinstance(chardev, FileChar) and chardev.path == str(path)
    chardev.close()
    with pytest.raises(ChardevError, match="needs a path"):
        chardev_from_spec("file:")
    with pytest.raises(ChardevError, match="unknown serial back-end 'tcp:1234'"):
        chardev_from_spec("tcp:1234")
    with pytest.raises(ValueError):
        chardev_from_spec("")


def test_chardev_from_spec_stdio_uses_the_process_stdio(monkeypatch) -> None:
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(r_in, "rb", closefd=False))
    monkeypatch.setattr(sys, "stdout", os.fdopen(w_out, "wb", closefd=False))
    chardev = chardev_from_spec("stdio")
    try:
        assert isinstance(chardev, StdioChar)
        assert (chardev.in_fd, chardev.out_fd) == (r_in, w_out)
        assert not chardev.raw_mode  # a pipe is no terminal
    finally:
        chardev.close()
        for fd in (r_in, w_in, r_out, w_out):
            os.close(fd)


# -- StdioChar on pipes ------------------------------------------------------------------------


@pytest.fixture
def pipes():
    fds = [*os.pipe(), *os.pipe()]  # stdin read/write, stdout read/write
    yield fds
    for fd in fds:
        if fd >= 0:  # a test that closes one sets it to -1
            os.close(fd)


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def read_available(fd: int, timeout: float = 1.0) -> bytes:
    out = b""
    while select.select([fd], [], [], timeout)[0]:
        out += os.read(fd, 4096)
        timeout = 0.05
    return out


def test_stdio_on_pipes_passes_bytes_through(pipes) -> None:
    r_in, w_in, r_out, w_out = pipes
    chardev = StdioChar(r_in, w_out, on_quit=lambda: pytest.fail("no escapes on a pipe"))
    sink = Sink()
    chardev.attach(sink)
    try:
        assert not chardev.escapes and not chardev.raw_mode
        os.write(w_in, b"plain \x01x input")
        assert wait_until(lambda: len(sink.got) == 14)
        assert bytes(sink.got) == b"plain \x01x input"
        chardev.write(b"guest says hi\n")
        assert read_available(r_out) == b"guest says hi\n"
    finally:
        chardev.close()
    assert not chardev._reader.is_alive()


def test_stdio_escapes(pipes) -> None:
    r_in, w_in, r_out, w_out = pipes
    quits, monitors = [], []
    chardev = StdioChar(r_in, w_out, on_quit=lambda: quits.append(1),
                        on_monitor=lambda: monitors.append(1), escapes=True)
    sink = Sink()
    chardev.attach(sink)
    try:
        os.write(w_in, b"a\x01\x01b\x01")  # escape split across two reads
        assert wait_until(lambda: bytes(sink.got) == b"a\x01b")
        os.write(w_in, b"cc\x01B\x01zd")
        assert wait_until(lambda: sink.events[-1:] == [b"d"])
        assert monitors == [1]
        assert sink.events == [b"a\x01b", b"c", "BREAK", b"d"]  # C-a z is ignored
        os.write(w_in, b"\x01h")
        assert b"C-a x    exit emulator" in read_available(r_out)
        assert quits == []
        os.write(w_in, b"\x01x")
        assert wait_until(lambda: quits == [1])
        assert b"terminated" in read_available(r_out)
    finally:
        chardev.close()


def test_stdio_output_on_a_full_non_blocking_pipe_arrives_once(pipes) -> None:
    """A write the pipe takes only part of (non-blocking, with room for less than
    the write) goes on from where it stopped as the reader drains it: every byte
    once, in order."""
    r_in, _w_in, r_out, w_out = pipes
    os.set_blocking(w_out, False)
    chardev = StdioChar(r_in, w_out)
    filler = b"f" * 65536
    while True:                     # fill the pipe to a few bytes short of full
        try:
            os.write(w_out, filler[:4096] if len(filler) > 4096 else filler)
        except BlockingIOError:
            break
    got = bytearray(os.read(r_out, 8192))     # room for part of the next write
    data = bytes(range(256)) * 64
    writer = threading.Thread(target=chardev.write, args=(data,))
    writer.start()
    try:
        while writer.is_alive() or select.select([r_out], [], [], 0.2)[0]:
            if select.select([r_out], [], [], 0.2)[0]:
                got += os.read(r_out, 65536)
    finally:
        writer.join()
        chardev.close()
    assert bytes(got).lstrip(b"f") == data


def test_stdio_reader_stops_at_end_of_input(pipes) -> None:
    r_in, w_in, _r_out, w_out = pipes
    chardev = StdioChar(r_in, w_out)
    sink = Sink()
    chardev.attach(sink)
    os.write(w_in, b"last words")
    os.close(w_in)
    pipes[1] = -1
    assert wait_until(lambda: not chardev._reader.is_alive())
    assert bytes(sink.got) == b"last words"
    chardev.close()


def test_base_class_is_usable_for_custom_backends() -> None:
    class Upper(CharBackend):
        def __init__(self) -> None:
            super().__init__()
            self.seen = b""

        def _write(self, data: bytes) -> None:
            self.seen += data.upper()

    backend = Upper()
    backend.write(b"abc")
    assert backend.seen == b"ABC"


# -- StdioChar on a terminal ---------------------------------------------------------------------

PTY_CHILD = textwrap.dedent("""
    import os, sys, termios, threading
    from vmforge.chardev import StdioChar

    quit_ = threading.Event()
    got = bytearray()

    class Frontend:
        def can_receive(self):
            return 64

        def receive(self, data):
            got.extend(data)

    chardev = StdioChar(on_quit=quit_.set)
    lflag = termios.tcgetattr(0)[3]
    chardev.write(b"RAW icanon=%d echo=%d isig=%d\\n" % (
        bool(lflag & termios.ICANON), bool(lflag & termios.ECHO), bool(lflag & termios.ISIG)))
    chardev.attach(Frontend())
    chardev.write(b"READY\\n")
    ok = quit_.wait(20)
    chardev.close()
    lflag = termios.tcgetattr(0)[3]
    os.write(1, b"GOT %s quit=%d\\n" % (got.hex().encode(), ok))
    os.write(1, b"RESTORED icanon=%d echo=%d\\n" % (
        bool(lflag & termios.ICANON), bool(lflag & termios.ECHO)))
""")


def test_stdio_raw_mode_and_ctrl_a_x_on_a_pty() -> None:
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    child = subprocess.Popen([sys.executable, "-c", PTY_CHILD], stdin=slave, stdout=slave,
                             stderr=subprocess.PIPE, close_fds=True)
    out = b""
    try:
        deadline = time.monotonic() + 20
        sent = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
            if not sent and b"READY" in out:
                # Ctrl-C must reach the guest (ISIG off); C-a C-a is one Ctrl-A
                os.write(master, b"ls\r\x03\x01\x01\x01x")
                sent = True
            if b"RESTORED" in out and out.endswith(b"\n"):
                break
        child.wait(timeout=20)
        after = termios.tcgetattr(slave)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stderr = child.stderr.read().decode() if child.stderr else ""
        if child.stderr:
            child.stderr.close()
        os.close(master)
        os.close(slave)
    text = out.decode(errors="replace")
    assert child.returncode == 0, stderr + text
    assert "RAW icanon=0 echo=0 isig=0" in text
    echoed = text.split("READY")[1].split("GOT")[0]
    assert "ls" not in echoed  # no echo in raw mode
    assert "GOT 6c730d0301 quit=1" in text  # "ls\r", Ctrl-C, one Ctrl-A
    assert "RESTORED icanon=1 echo=1" in text
    assert after == before
