"""Marginal convert throughput, vmforge vs qemu-img, without process start-up.

    .venv/bin/python benchmarks/convert_marginal.py [--rounds 5]

Converts the 128 MiB and the 1 GiB mixed images of bench_img.py (build them by
running it once) with each tool, best of N rounds after ``sync``, and divides the
difference in size by the difference in time: the fixed cost of starting each
tool cancels out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from vmforge.guests import cache_dir

CASES = {
    "raw-to-qcow2": ("raw", ["-f", "raw", "-O", "qcow2"], "qcow2"),
    "qcow2-to-raw": ("qcow2", ["-f", "qcow2", "-O", "raw"], "raw"),
}
SIZES = (128 << 20, 1 << 30)


def best_time(cmd: list[str], dst: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        if os.path.exists(dst):
            os.unlink(dst)
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import byte_compile

    byte_compile()
    bench = cache_dir() / "bench"
    vmforge = shutil.which("vmforge") or os.path.join(os.path.dirname(sys.executable), "vmforge")
    tools = {"vmforge": [vmforge, "img", "convert"], "qemu-img": ["qemu-img", "convert"]}
    for case, (src_ext, flags, ext) in CASES.items():
        times: dict[tuple[str, int], float] = {}
        for size in SIZES:
            src = bench / f"mixed-{size}.{src_ext}"
            if not src.exists():
                print(f"{src} is missing: run benchmarks/bench_img.py first", file=sys.stderr)
                return 1
            subprocess.run(["cat", str(src)], check=True, stdout=subprocess.DEVNULL)  # warm
            for tool, cmd in tools.items():
                dst = str(bench / f"marginal-out.{ext}")
                times[(tool, size)] = best_time([*cmd, *flags, str(src), dst], dst, args.rounds)
        rates = {}
        for tool in tools:
            delta = times[(tool, SIZES[1])] - times[(tool, SIZES[0])]
            rates[tool] = (SIZES[1] - SIZES[0]) / delta
            print(f"{case:13} {tool:8} {times[(tool, SIZES[0])]:.3f} s / "
                  f"{times[(tool, SIZES[1])]:.3f} s -> {rates[tool] / 1e9:.2f} GB/s")
        print(f"{case:13} vmforge/qemu-img throughput: {rates['vmforge'] / rates['qemu-img']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
