"""KVM exit round trips and guest compute, side by side in one run.

Exits: a guest at CPL3 (IOPL 3, entered in long mode by
``enter_long_mode(user=True)``) loops on ``in``/``inc``/``out`` to a port
(``kvm_guests/pio.S``) or on a load/store to an address with no RAM
(``kvm_guests/mmio.S``).  Each exit is handled and the guest resumed, by

- ``vmforge``: a Python callbacks object through ``vmforge.accel.kvm``
  (``KVM_RUN`` without the GIL, the exit decoded in Cython);
- ``fcntl``: a plain-Python loop of ``fcntl.ioctl(KVM_RUN)`` decoding ``kvm_run``
  from an mmap with ``struct`` (the VM set up by vmforge's layer);
- ``C``: ``kvm_floor.c`` (the floor: the same guest, set-up and loop in C with a
  trivial handler; KVM ties a VM to its process, so it makes its own);
- ``vmforge, no callback``: the layer's loop with no Python callback at all (its
  own cost).

Every handler answers a read with the last value written, so N exits leave N/2
behind: each variant's result is checked.  Compute: FNV-1a over 64 KiB
(``kvm_guests/compute.S``), the same bytes run at CPL3 in the guest and called
natively on the host (``kvm_guests/host_compute.c``).  C programs and guests are
built with gcc and GNU as at benchmark time, in a temporary directory.

Run ``.venv/bin/python benchmarks/bench_kvm.py [ROUNDS]`` for the table of
RESULTS.md (rounds interleaved, medians, each rate as a share of the C floor of
the same round), or ``.venv/bin/python -m pytest benchmarks/bench_kvm.py`` for
pytest-benchmark figures (``extra_info``).  Skips, saying why, without a usable
``/dev/kvm`` (or gcc).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from vmforge.accel.kvm import IOCTLS, Kvm, Regs, Vcpu, VcpuExit, kvm_available
from vmforge.accel.kvm.x86 import enter_long_mode, identity_page_tables
from vmforge.memory import GuestMemory
from vmforge.testing.oracles import oracle_missing

N = int(os.environ.get("VMFORGE_BENCH_KVM_EXITS", "20000")) // 2 * 2   # even: in + out
HERE = Path(__file__).resolve().parent
GUESTS = HERE / "kvm_guests"
RAM, CODE, PAGES, STACK = 0x200000, 0x1000, 0x10000, 0x9000
PORT, MMIO_ADDR = 0x10, 0x10000000               # as pio.S, mmio.S and kvm_floor.c
BUF, BUF_LEN, HASH_ROUNDS = 0x100000, 0x10000, 3000
EXIT_IO, EXIT_MMIO = 2, 6                        # KVM_EXIT_IO, KVM_EXIT_MMIO


def _missing() -> str | None:
    why = kvm_available()
    if why is None and shutil.which("gcc") is None:
        why = "gcc is not installed (Debian package gcc)"
    return why


# -- building -----------------------------------------------------------------------------

class Build:
    """The guests (flat binaries at ``CODE``) and C programs, built into ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.guest = {name: self._assemble(name) for name in ("pio", "mmio", "compute")}
        self.floor = self._cc("kvm_floor", HERE / "kvm_floor.c")
        self.host_compute = self._cc("host_compute", GUESTS / "host_compute.c")

    def _assemble(self, name: str) -> Path:
        obj, binary = self.out / f"{name}.o", self.out / f"{name}.bin"
        subprocess.run(["as", "--64", "-o", str(obj), str(GUESTS / f"{name}.S")], check=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-N", f"-Ttext={CODE:#x}", "-e", "_start",
                        "--oformat=binary", "-o", str(binary), str(obj)], check=True)
        return binary

    def _cc(self, name: str, source: Path) -> Path:
        exe = self.out / name
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(source)], check=True)
        return exe


class Guest:
    """One guest in its own VM, made by vmforge's layer, at CPL3 at ``CODE``."""

    def __init__(self, binary: Path, regs: Regs | None = None) -> None:
        self.kvm = Kvm()
        self.vm = self.kvm.create_vm()
        self.mem = GuestMemory()
        self.mem.add_ram(0, RAM)
        self.mem.write(CODE, binary.read_bytes())
        self.cr3 = identity_page_tables(self.mem, PAGES)
        self.vm.map_memory(self.mem)
        self.vcpu: Vcpu = self.vm.create_vcpu()
        self.vcpu.set_cpuid(self.kvm.supported_cpuid())
        self.enter(regs)

    def enter(self, regs: Regs | None = None) -> None:
        enter_long_mode(self.vcpu, self.cr3, rip=CODE, rsp=STACK, user=True, regs=regs)

    def close(self) -> None:
        self.vm.close()
        self.kvm.close()


# -- one round of N exits each way: exits per second ----------------------------------------

class Register:
    """The guest's register behind its port or MMIO address: a read gives the last value
    written; stops ``vcpu`` at the n-th exit (a write, n even: the next run starts with
    a read)."""

    def __init__(self, vcpu: Vcpu, n: int) -> None:
        self.vcpu, self.n, self.count, self.value = vcpu, n, 0, 0

    def read(self, where: int, size: int) -> int:
        self.count += 1
        return self.value

    def write(self, where: int, size: int, value: int) -> None:
        self.value = value
        self.count += 1
        if self.count == self.n:
            self.vcpu.stop()


class PioDevice(Register):
    pio_in, pio_out = Register.read, Register.write


class MmioDevice(Register):
    mmio_read, mmio_write = Register.read, Register.write


class Rate(NamedTuple):
    """Exits per second of wall time, and per second of the thread's CPU time (user and
    system: the guest's own time included; steadier than wall time on a busy host)."""

    wall: float
    cpu: float


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _rate(n: int, start: tuple[float, float]) -> Rate:
    wall, cpu = _clocks()
    return Rate(n / (wall - start[0]), n / (cpu - start[1]))


def exits_vmforge(vcpu: Vcpu, mmio: bool, n: int = N) -> Rate:
    d = (MmioDevice if mmio else PioDevice)(vcpu, n)
    start = _clocks()
    reason = vcpu.run(d)
    rate = _rate(n, start)
    _check(reason is VcpuExit.STOPPED and d.count == n and d.value == n // 2, "vmforge", d.value)
    return rate


def exits_fcntl(vcpu: Vcpu, mmio: bool, n: int = N) -> Rate:
    page = mmap.mmap(vcpu.fd, vcpu.vm.kvm.vcpu_mmap_size)
    try:
        return _fcntl_loop(vcpu.fd, page, mmio, n)
    finally:
        page.close()


def _fcntl_loop(fd: int, page: mmap.mmap, mmio: bool, n: int) -> Rate:
    ioctl, kvm_run = fcntl.ioctl, IOCTLS["KVM_RUN"]
    reason_at = struct.Struct("<I").unpack_from              # kvm_run.exit_reason at 8
    io_at = struct.Struct("<BBHIQ").unpack_from              # kvm_run.io at 32
    mmio_at = struct.Struct("<Q8xIB").unpack_from            # kvm_run.mmio at 32
    u32_at, u32_into = struct.Struct("<I").unpack_from, struct.Struct("<I").pack_into
    value = 0
    start = _clocks()
    for _ in range(n):
        ioctl(fd, kvm_run, 0)
        reason, = reason_at(page, 8)
        if mmio:
            addr, size, is_write = mmio_at(page, 32)
            if reason != EXIT_MMIO or addr != MMIO_ADDR or size != 4:
                raise AssertionError(f"exit {reason} at {addr:#x}")
            if is_write:
                value, = u32_at(page, 40)
            else:
                u32_into(page, 40, value)
        else:
            out, size, port, count, offset = io_at(page, 32)
            if reason != EXIT_IO or port != PORT or size != 4 or count != 1:
                raise AssertionError(f"exit {reason} on port {port:#x}")
            if out:
                value, = u32_at(page, offset)
            else:
                u32_into(page, offset, value)
    rate = _rate(n, start)
    _check(value == n // 2, "fcntl", value)
    return rate


def exits_c(build: Build, mmio: bool, n: int = N) -> Rate:
    kind = "mmio" if mmio else "pio"
    out = subprocess.run([str(build.floor), str(build.guest[kind]), str(n), kind],
                         check=True, capture_output=True, text=True).stdout
    exits, ns, value, cpu_ns = map(int, out.split())
    _check(exits == n and value == n // 2, "kvm_floor", value)
    return Rate(n / (ns / 1e9), n / (cpu_ns / 1e9))     # its own clocks, no start-up


def exits_no_callback(vcpu: Vcpu, seconds: float = 0.5) -> Rate:
    """The layer's loop alone: no callbacks (reads answer all ones, writes are dropped),
    for a fixed time; the rate is the vCPU's exit count over the time.  The guest may
    stop between its ``in`` and ``out``: give it a VM of its own."""
    timer = threading.Timer(seconds, vcpu.stop)
    first, start = vcpu.exits, _clocks()
    timer.start()
    reason = vcpu.run(None)
    rate = _rate(vcpu.exits - first, start)
    _check(reason is VcpuExit.STOPPED, "no callback", reason)
    return rate


def _check(ok: bool, who: str, got: object) -> None:
    if not ok:
        raise AssertionError(f"{who}: the guest's loop did not end as expected ({got})")


# -- compute: the same FNV-1a bytes in the guest at CPL3 and on the host ---------------------

def _pattern() -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(BUF_LEN))     # as host_compute.c


def compute_guest(guest: Guest, rounds: int = HASH_ROUNDS) -> tuple[int, float]:
    """(hash, bytes hashed per second) of one run of the compute guest."""
    vcpu = guest.vcpu

    class Done:
        def pio_out(self, port: int, size: int, value: int) -> None:
            vcpu.stop()

    guest.enter(Regs(rdi=BUF, rsi=BUF_LEN, rdx=rounds))
    t0 = time.perf_counter()
    reason = vcpu.run(Done())
    dt = time.perf_counter() - t0
    _check(reason is VcpuExit.STOPPED, "compute guest", reason)
    return vcpu.get_regs().rax, BUF_LEN * rounds / dt


def compute_host(build: Build, rounds: int = HASH_ROUNDS) -> tuple[int, float]:
    out = subprocess.run([str(build.host_compute), str(build.guest["compute"]), str(BUF_LEN),
                          str(rounds)], check=True, capture_output=True, text=True).stdout
    h, ns = map(int, out.split())
    return h, BUF_LEN * rounds / (ns / 1e9)


def fnv1a(data: bytes, rounds: int = 1) -> int:
    """The reference (Python) for a short check of both."""
    h = 0xCBF29CE484222325
    for _ in range(rounds):
        for b in data:
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def compute_guest_vm(build: Build) -> Guest:
    g = Guest(build.guest["compute"])
    g.mem.write(BUF, _pattern())
    return g


# -- whole processes --------------------------------------------------------------------

def module_example() -> str:
    """The KVM layer's runnable example in the README, as a ``python -c`` program."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return readme.split("### The KVM layer\n", 1)[1].split("```python\n", 1)[1].split(
        "```", 1)[0]


def process_seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure_processes(build: Build, repeat: int = 5) -> dict[str, float]:
    """Median wall seconds, start to end: the example through ``python -c``, Python
    importing the layer only, and the C floor running the port-I/O guest for 2 exits."""
    cmds = {"example": [sys.executable, "-c", module_example()],
            "import": [sys.executable, "-c", "import vmforge.accel.kvm"],
            "python": [sys.executable, "-c", "pass"],
            "floor": [str(build.floor), str(build.guest["pio"]), "2", "pio"]}
    seen: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeat):
        for k, cmd in cmds.items():
            seen[k].append(process_seconds(cmd))
    return {k: statistics.median(v) for k, v in seen.items()}


# -- all of it, interleaved ----------------------------------------------------------------

VARIANTS = ("pio vmforge", "pio fcntl", "pio C", "pio no callback",
            "mmio vmforge", "mmio fcntl", "mmio C")


def measure(build: Build, rounds: int = 7) -> dict[str, list[float]]:
    """``rounds`` rounds, each running every variant once (so a busy spell on the shared
    host hits all of them): exits per wall second under each variant's name and per
    CPU second under ``"<name> cpu"``; compute bytes per second (``guest``, ``host``)."""
    pio, mmio = Guest(build.guest["pio"]), Guest(build.guest["mmio"])
    bare, comp = Guest(build.guest["pio"]), compute_guest_vm(build)
    runs: dict[str, Callable[[], Rate]] = {
        "pio vmforge": lambda: exits_vmforge(pio.vcpu, False),
        "pio fcntl": lambda: exits_fcntl(pio.vcpu, False),
        "pio C": lambda: exits_c(build, False),
        "pio no callback": lambda: exits_no_callback(bare.vcpu),
        "mmio vmforge": lambda: exits_vmforge(mmio.vcpu, True),
        "mmio fcntl": lambda: exits_fcntl(mmio.vcpu, True),
        "mmio C": lambda: exits_c(build, True),
    }
    seen: dict[str, list[float]] = {k: [] for k in (*VARIANTS, "guest", "host")}
    try:
        for _ in range(rounds):
            for k, fn in runs.items():
                r = fn()
                seen[k].append(r.wall)
                seen.setdefault(f"{k} cpu", []).append(r.cpu)
            hg, guest_rate = compute_guest(comp)
            hh, host_rate = compute_host(build)
            _check(hg == hh, "compute", (hg, hh))
            seen["guest"].append(guest_rate)
            seen["host"].append(host_rate)
    finally:
        for g in (pio, mmio, bare, comp):
            g.close()
    return seen


def ratio(seen: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """(median, min, max) of ``num / den`` taken round by round."""
    r = [a / b for a, b in zip(seen[num], seen[den], strict=True)]
    return statistics.median(r), min(r), max(r)


def table(seen: dict[str, list[float]], procs: dict[str, float]) -> str:
    """The markdown of RESULTS.md's KVM figures: medians, and each rate as a share of the
    C floor's in the same round (median, then the range over the rounds)."""
    lines = ["| exits per second, median (share of the C floor) | vmforge, Python callback "
             "| plain `fcntl.ioctl` loop | C floor | vmforge, no callback |",
             "|---|---|---|---|---|"]
    for kind, name in (("pio", "port I/O"), ("mmio", "MMIO")):
        for clock, label in (("", "wall"), (" cpu", "CPU")):
            cells = []
            for who in ("vmforge", "fcntl", "C", "no callback"):
                k = f"{kind} {who}{clock}"
                if k not in seen:
                    cells.append("-")
                    continue
                m, lo, hi = ratio(seen, k, f"{kind} C{clock}")
                share = "" if who == "C" else f" ({m:.1%}; {lo:.0%}-{hi:.0%})"
                cells.append(f"{statistics.median(seen[k]) / 1e3:.1f} K{share}")
            lines.append(f"| {name}, per {label} second | " + " | ".join(cells) + " |")
    g, lo, hi = ratio(seen, "guest", "host")
    lines += ["", f"Compute (FNV-1a over 64 KiB, MB/s, median): guest at CPL3 "
              f"{statistics.median(seen['guest']) / 1e6:.0f}, host "
              f"{statistics.median(seen['host']) / 1e6:.0f}: guest/host {g:.2f} "
              f"({lo:.2f}-{hi:.2f})."]
    lines += ["", "Whole processes (median wall ms): "
              + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in procs.items())]
    return "\n".join(lines)


# -- pytest -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    why = _missing()
    if why is not None:
        oracle_missing(why)
    return Build(tmp_path_factory.mktemp("bench-kvm"))


@pytest.fixture(scope="module")
def pio_guest(build: Build) -> Iterator[Guest]:
    g = Guest(build.guest["pio"])
    yield g
    g.close()


@pytest.fixture(scope="module")
def mmio_guest(build: Build) -> Iterator[Guest]:
    g = Guest(build.guest["mmio"])
    yield g
    g.close()


def _record(benchmark, group: str, fn: Callable[[], Rate]) -> None:
    seen: list[Rate] = []
    benchmark.group = group
    benchmark.pedantic(lambda: seen.append(fn()), rounds=5, iterations=1)
    benchmark.extra_info["exits_per_s"] = round(statistics.median(r.wall for r in seen))
    benchmark.extra_info["exits_per_cpu_s"] = round(statistics.median(r.cpu for r in seen))


@pytest.mark.parametrize("mmio", [False, True], ids=["pio", "mmio"])
def test_exits_vmforge(benchmark, pio_guest, mmio_guest, mmio) -> None:
    g = mmio_guest if mmio else pio_guest
    _record(benchmark, f"KVM {'MMIO' if mmio else 'port-I/O'} exits",
            lambda: exits_vmforge(g.vcpu, mmio))


@pytest.mark.parametrize("mmio", [False, True], ids=["pio", "mmio"])
def test_exits_fcntl(benchmark, pio_guest, mmio_guest, mmio) -> None:
    g = mmio_guest if mmio else pio_guest
    _record(benchmark, f"KVM {'MMIO' if mmio else 'port-I/O'} exits",
            lambda: exits_fcntl(g.vcpu, mmio))


@pytest.mark.parametrize("mmio", [False, True], ids=["pio", "mmio"])
def test_exits_c_floor(benchmark, build, mmio) -> None:
    _record(benchmark, f"KVM {'MMIO' if mmio else 'port-I/O'} exits",
            lambda: exits_c(build, mmio))


def test_exits_vmforge_no_callback(benchmark, build) -> None:
    g = Guest(build.guest["pio"])      # its own: it may stop between an in and an out
    try:
        _record(benchmark, "KVM port-I/O exits", lambda: exits_no_callback(g.vcpu))
    finally:
        g.close()


def test_compute(benchmark, build) -> None:
    """Guest CPL3 compute beside the host's: both hash the same buffer with the same
    bytes; extra_info has both rates and their ratio (median of 3)."""
    g = compute_guest_vm(build)
    try:
        assert compute_guest(g, 1)[0] == compute_host(build, 1)[0] == fnv1a(_pattern())
        pairs: list[tuple[float, float]] = []

        def once() -> None:
            hg, rg = compute_guest(g)
            hh, rh = compute_host(build)
            assert hg == hh
            pairs.append((rg, rh))

        benchmark.group = "KVM CPL3 compute"
        benchmark.pedantic(once, rounds=3, iterations=1)
    finally:
        g.close()
    benchmark.extra_info["guest_bytes_per_s"] = round(statistics.median(p[0] for p in pairs))
    benchmark.extra_info["host_bytes_per_s"] = round(statistics.median(p[1] for p in pairs))
    benchmark.extra_info["guest_over_host"] = round(statistics.median(a / b for a, b in pairs), 3)


def test_side_by_side(benchmark, build) -> None:
    """Every variant interleaved, 3 rounds: the shares of the C floor, round by round."""
    result: dict[str, list[float]] = {}
    benchmark.group = "KVM side by side"
    benchmark.pedantic(lambda: result.update(measure(build, rounds=3)), rounds=1, iterations=1)
    for v in VARIANTS:
        kind = v.split()[0]
        benchmark.extra_info[f"{v} exits_per_s"] = round(statistics.median(result[v]))
        if v.endswith(" C"):
            continue
        benchmark.extra_info[f"{v} / C"] = round(ratio(result, v, f"{kind} C")[0], 3)
        benchmark.extra_info[f"{v} / C, CPU time"] = round(
            ratio(result, f"{v} cpu", f"{kind} C cpu")[0], 3)
    benchmark.extra_info["guest / host compute"] = round(ratio(result, "guest", "host")[0], 3)


def test_processes(benchmark, build) -> None:
    """Whole processes, start to end: the module's example under ``python -c`` beside
    the C floor's process (median wall seconds in extra_info)."""
    procs: dict[str, float] = {}
    benchmark.group = "KVM whole processes"
    benchmark.pedantic(lambda: procs.update(measure_processes(build, 3)), rounds=1,
                       iterations=1)
    benchmark.extra_info.update({f"{k}_s": round(v, 4) for k, v in procs.items()})


if __name__ == "__main__":
    if (why := _missing()) is not None:
        sys.exit(f"bench_kvm: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        b = Build(Path(tmp))
        t = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        seen = measure(b, int(sys.argv[1]) if len(sys.argv) > 1 else 7)
        procs = measure_processes(b)
        print(f"{t}, N={N} exits a round, load average {load:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end\n")
        print(table(seen, procs))
