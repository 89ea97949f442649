"""KVM exit round trips: a guest at CPL3 doing ``out`` in a loop, each exit handled by
a Python callback through ``vmforge.accel.kvm`` (``KVM_RUN`` without the GIL, exit
decoded in Cython), by a plain ``fcntl.ioctl`` loop in Python, and by a C program (the
floor, ``kvm_exit_loop.c``, built with gcc; KVM ties a VM to its process, so it sets
up the same guest itself).

Run: ``.venv/bin/python -m pytest benchmarks/bench_kvm.py --benchmark-columns=mean,ops``;
``extra_info.exits_per_s`` is the figure.  Skips when ``/dev/kvm`` is not usable.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vmforge.accel.kvm import IOCTLS, Kvm, VcpuExit, kvm_available
from vmforge.accel.kvm.x86 import enter_long_mode, identity_page_tables
from vmforge.memory import GuestMemory
from vmforge.testing.oracles import oracle_missing

N = int(os.environ.get("VMFORGE_BENCH_KVM_EXITS", "20000"))
HERE = Path(__file__).resolve().parent

# 1: out %al, (%dx); jmp 1b  -- at CPL3 with IOPL 3, entered by the host in long mode
GUEST = bytes([0xEE, 0xEB, 0xFD])
# 1: mov %eax, (%rbx); jmp 1b  -- rbx = 0x300000, past the 2 MiB of RAM: MMIO exits
MMIO_GUEST = bytes([0x89, 0x03, 0xEB, 0xFC])

if (_why := kvm_available()) is not None:
    oracle_missing(_why)


def _vcpu(code: bytes):
    kvm = Kvm()
    vm = kvm.create_vm()
    mem = GuestMemory()
    mem.add_ram(0, 0x200000)
    mem.write(0x1000, code)
    cr3 = identity_page_tables(mem, 0x10000)
    vm.map_memory(mem)
    v = vm.create_vcpu()
    v.set_cpuid(kvm.supported_cpuid())
    enter_long_mode(v, cr3, rip=0x1000, rsp=0x9000, user=True)
    r = v.get_regs()
    r.rdx, r.rbx = 0x10, 0x300000
    v.set_regs(r)
    return kvm, vm, v


@pytest.fixture(scope="module")
def vcpu():
    kvm, vm, v = _vcpu(GUEST)
    yield v
    vm.close()
    kvm.close()


@pytest.fixture(scope="module")
def mmio_vcpu():
    kvm, vm, v = _vcpu(MMIO_GUEST)
    yield v
    vm.close()
    kvm.close()


def test_exits_python_callback(benchmark, rate, vcpu) -> None:
    class Counter:
        n = 0

        def pio_out(self, port: int, size: int, value: int) -> None:
            self.n += 1
            if self.n == N:
                vcpu.stop()

    def run() -> None:
        cb = Counter()
        assert vcpu.run(cb) is VcpuExit.STOPPED and cb.n == N

    benchmark.group = "KVM port-I/O exits"
    benchmark(run)
    rate(N, "exits")


def test_mmio_exits_python_callback(benchmark, rate, mmio_vcpu) -> None:
    class Counter:
        n = 0

        def mmio_write(self, addr: int, size: int, value: int) -> None:
            self.n += 1
            if self.n == N:
                mmio_vcpu.stop()

    def run() -> None:
        cb = Counter()
        assert mmio_vcpu.run(cb) is VcpuExit.STOPPED and cb.n == N

    benchmark.group = "KVM MMIO exits"
    benchmark(run)
    rate(N, "exits")


def test_mmio_exits_c_loop(benchmark, c_loop) -> None:
    seen = []

    def run() -> None:
        out = subprocess.run([c_loop, str(N), "mmio"], check=True, capture_output=True,
                             text=True)
        exits, ns = map(int, out.stdout.split())
        assert exits == N
        seen.append(ns)

    benchmark.group = "KVM MMIO exits"
    benchmark(run)
    benchmark.extra_info["exits_per_s"] = round(N / (sum(seen) / len(seen) / 1e9))


def test_exits_no_callback(benchmark, vcpu) -> None:
    """The layer's own cost: exits decoded in C with no Python callback (the out is
    dropped), for a fixed time; the rate comes from the vCPU's exit count."""
    seen = []

    def run() -> None:
        timer = threading.Timer(0.5, vcpu.stop)
        first, t0 = vcpu.exits, time.perf_counter()
        timer.start()
        assert vcpu.run(None) is VcpuExit.STOPPED
        seen.append((vcpu.exits - first) / (time.perf_counter() - t0))

    benchmark.group = "KVM port-I/O exits (no callback, 0.5 s rounds)"
    benchmark(run)
    benchmark.extra_info["exits_per_s"] = round(sorted(seen)[len(seen) // 2])


def test_exits_fcntl_loop(benchmark, rate, vcpu) -> None:
    page = mmap.mmap(vcpu.fd, vcpu.vm.kvm.vcpu_mmap_size)
    KVM_RUN = IOCTLS["KVM_RUN"]
    fd = vcpu.fd
    ioctl = fcntl.ioctl
    unpack = struct.unpack_from

    def run() -> None:
        for _ in range(N):
            ioctl(fd, KVM_RUN, 0)
            reason, = unpack("<I", page, 8)
            _direction, _size, port = unpack("<BBH", page, 32)
            if reason != 2 or port != 0x10:
                raise AssertionError(f"exit {reason}, port {port:#x}")

    benchmark.group = "KVM port-I/O exits"
    benchmark(run)
    rate(N, "exits")
    page.close()


def _build(tmp_path_factory, name: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        oracle_missing("gcc is not installed (Debian package gcc)")
    exe = tmp_path_factory.mktemp("kvm-c") / name
    subprocess.run([gcc, "-O2", "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    return str(exe)


@pytest.fixture(scope="module")
def c_loop(tmp_path_factory) -> str:
    return _build(tmp_path_factory, "kvm_exit_loop")


def test_exits_c_loop(benchmark, c_loop) -> None:
    seen = []

    def run() -> None:
        out = subprocess.run([c_loop, str(N)], check=True, capture_output=True, text=True)
        exits, ns = map(int, out.stdout.split())
        assert exits == N
        seen.append(ns)

    benchmark.group = "KVM port-I/O exits"
    benchmark(run)
    # the program's own clock (mean over rounds, as rate() does), without process start-up
    benchmark.extra_info["exits_per_s"] = round(N / (sum(seen) / len(seen) / 1e9))


# -- CPL3 compute: the guest's loop against the same loop on the host -----------------

LOOPS = 200_000_000
# mov %rdi,%rcx; xor %eax,%eax; 1: add %rcx,%rax; dec %rcx; jnz 1b; out %eax,(%dx)
COMPUTE = bytes.fromhex("4889f9" "31c0" "4801c8" "48ffc9" "75f8" "ef")


def test_cpl3_compute_guest(benchmark) -> None:
    kvm = Kvm()
    vm = kvm.create_vm()
    mem = GuestMemory()
    mem.add_ram(0, 0x200000)
    mem.write(0x1000, COMPUTE)
    cr3 = identity_page_tables(mem, 0x10000)
    vm.map_memory(mem)
    v = vm.create_vcpu()
    v.set_cpuid(kvm.supported_cpuid())
    got = []

    class Done:
        def pio_out(self, port: int, size: int, value: int) -> None:
            got.append(value)
            v.stop()

    def run() -> None:
        enter_long_mode(v, cr3, rip=0x1000, rsp=0x9000, user=True)
        r = v.get_regs()
        r.rdi, r.rdx = LOOPS, 0x10
        v.set_regs(r)
        assert v.run(Done()) is VcpuExit.STOPPED
        assert got[-1] == (LOOPS * (LOOPS + 1) // 2) & 0xFFFFFFFF

    benchmark.group = "CPL3 compute (add/dec/jnz loop)"
    benchmark(run)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None):
        benchmark.extra_info["loops_per_s"] = round(LOOPS / stats.stats.mean)
    vm.close()
    kvm.close()


def test_cpl3_compute_host(benchmark, tmp_path_factory) -> None:
    exe = _build(tmp_path_factory, "kvm_host_loop")
    seen = []

    def run() -> None:
        out = subprocess.run([exe, str(LOOPS)], check=True, capture_output=True, text=True)
        total, ns = map(int, out.stdout.split())
        assert total == (LOOPS * (LOOPS + 1) // 2) & 0xFFFFFFFFFFFFFFFF
        seen.append(ns)

    benchmark.group = "CPL3 compute (add/dec/jnz loop)"
    benchmark(run)
    benchmark.extra_info["loops_per_s"] = round(LOOPS / (sum(seen) / len(seen) / 1e9))
