"""What the block-job tests share: a writer thread that writes a checksummed
pattern (:mod:`vmforge.testing.disk_pattern`) through the same BlockBackend
while a job runs, as a guest would, and the model of what each block must read
afterwards."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from vmforge.block import BlockBackend
from vmforge.block.jobs import BlockJob
from vmforge.testing.disk_pattern import BLOCK, block_bytes


class Writer:
    """Writes random blocks (and now and then zeros) until stopped; ``model`` holds
    what each written block must read (the image's first contents elsewhere)."""

    def __init__(self, bb: BlockBackend, seed: int = 0, blocks: int | None = None,
                 first: int = 0, interval: float = 0.0) -> None:
        self.bb = bb
        #: seconds between two writes (0: as fast as it can, which a copy over a slower
        #: target, such as an NBD export, may never catch up with)
        self.interval = interval
        self.first = first
        self.blocks = blocks or bb.size // BLOCK - first
        self.model: dict[int, bytes] = {}
        self.writes = 0
        self._stop = threading.Event()
        self._rand = random.Random(seed)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self, at_least: int = 50) -> Writer:
        """Start, and return once ``at_least`` writes have landed."""
        self._started = threading.Event()
        self._at_least = at_least
        self.thread.start()
        self._started.wait(30)
        return self

    def start_more(self, n: int) -> None:
        """Return once ``n`` more writes have landed."""
        goal = self.writes + n
        while self.writes < goal and self.thread.is_alive():
            self.thread.join(0.01)

    def _run(self) -> None:
        gen = 0
        try:
            while not self._stop.is_set():
                blk = self.first + self._rand.randrange(self.blocks)
                gen += 1
                if gen % 17 == 0:
                    n = self._rand.randrange(1, 4)
                    n = min(n, self.first + self.blocks - blk)
                    self.bb.write_zeroes(blk * BLOCK, n * BLOCK)
                    for b in range(blk, blk + n):
                        self.model[b] = bytes(BLOCK)
                else:
                    data = block_bytes(blk, gen)
                    self.bb.write(blk * BLOCK, data)
                    self.model[blk] = data
                self.writes += 1
                if self.writes >= self._at_least:
                    self._started.set()
                if self.interval:
                    self._stop.wait(self.interval)
        except BaseException as exc:
            self.error = exc
            self._started.set()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error

    def expected(self, initial: bytes) -> bytes:
        out = bytearray(initial)
        for blk, data in self.model.items():
            out[blk * BLOCK:(blk + 1) * BLOCK] = data
        return bytes(out)


def verify(bb: BlockBackend, expected: bytes) -> None:
    """Every block reads what was last written (the first bad block named)."""
    got = bb.read(0, len(expected))
    if got != expected:
        bad = next(i for i in range(0, len(got), BLOCK)
                   if got[i:i + BLOCK] != expected[i:i + BLOCK])
        raise AssertionError(f"block {bad // BLOCK} reads {got[bad:bad + 40]!r}, "
                             f"expected {expected[bad:bad + 40]!r}")


class Events:
    """A job listener that records (event, data) and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()

    def __call__(self, job: BlockJob, event: str, data: dict[str, Any]) -> None:
        with self.cond:
            self.seen.append((event, dict(data)))
            self.cond.notify_all()

    def names(self) -> list[str]:
        return [e for e, _ in self.seen]

    def statuses(self) -> list[str]:
        return [d["status"] for e, d in self.seen if e == "JOB_STATUS_CHANGE"]

    def data(self, event: str) -> dict[str, Any]:
        return next(d for e, d in self.seen if e == event)

    def wait_for(self, pred: Callable[[], bool], timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), self.seen

    def wait_status(self, status: str, timeout: float = 60) -> None:
        self.wait_for(lambda: status in self.statuses(), timeout)


MIB = 1 << 20


def make_chain(tmp: Any, size: int = 16 * MIB, seed: int = 1) -> tuple[str, str, bytes]:
    """``base.qcow2`` (data in its first half) under ``top.qcow2`` (some blocks of its
    own); their paths and what the chain reads."""
    from vmforge.block import create_image

    base, top = str(tmp / "base.qcow2"), str(tmp / "top.qcow2")
    r = random.Random(seed)
    create_image("qcow2", base, size)
    with BlockBackend.open(base, "qcow2", readonly=False) as bb:
        bb.write(0, r.randbytes(size // 2))
    create_image("qcow2", top, size, backing_file=base, backing_fmt="qcow2")
    with BlockBackend.open(top, "qcow2", readonly=False) as bb:
        for _ in range(64):
            bb.write(r.randrange(size // BLOCK) * BLOCK, r.randbytes(BLOCK))
        initial = bb.read(0, size)
    return base, top, initial


def qemu_img(*args: str) -> Any:
    """qemu-img, the oracle (its absence fails in CI)."""
    import subprocess

    from vmforge.testing.oracles import require_program

    exe = require_program("qemu-img", "qemu-utils")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False)


def assert_check_clean(path: str) -> None:
    r = qemu_img("check", path)
    assert r.returncode == 0 and "No errors were found" in r.stdout, r.stdout + r.stderr


def assert_same(a: str, b: str) -> None:
    r = qemu_img("compare", a, b)
    assert r.returncode == 0, r.stdout + r.stderr


def refused(message: str, call: Callable[[], object]) -> None:
    """``call()`` raises JobError with exactly ``message`` (QEMU's words)."""
    from vmforge.block.jobs import JobError

    try:
        call()
    except JobError as exc:
        assert str(exc) == message, f"{exc} != {message}"
    else:
        raise AssertionError(f"not refused: expected {message!r}")


def make_three(tmp: Any, size: int = 8 * MIB, seed: int = 2) -> tuple[list[str], bytes]:
    """``base.qcow2`` <- ``mid.qcow2`` <- ``top.qcow2``, each with data of its own;
    their paths (top first) and what the chain reads."""
    from vmforge.block import create_image

    r = random.Random(seed)
    paths = [str(tmp / n) for n in ("top.qcow2", "mid.qcow2", "base.qcow2")]
    create_image("qcow2", paths[2], size)
    create_image("qcow2", paths[1], size, backing_file=paths[2], backing_fmt="qcow2")
    create_image("qcow2", paths[0], size, backing_file=paths[1], backing_fmt="qcow2")
    for p, share in ((paths[2], 2), (paths[1], 4), (paths[0], 8)):
        with BlockBackend.open(p, "qcow2", readonly=False, backing=False) as bb:
            for _ in range(size // BLOCK // share // 8):
                n = r.randrange(1, 9)
                blk = r.randrange(size // BLOCK - n)
                bb.write(blk * BLOCK, r.randbytes(n * BLOCK))
            bb.write_zeroes(r.randrange(size // BLOCK - 16) * BLOCK, 16 * BLOCK)
    with BlockBackend.open(paths[0], "qcow2") as bb:
        initial = bb.read(0, size)
    return paths, initial


def backing_of(path: str) -> str | None:
    with BlockBackend.open(path, None, backing=False, force_share=True) as bb:
        return bb.top.backing_filename
