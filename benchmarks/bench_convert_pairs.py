"""Whole-process ``img convert`` for pairs of writable formats, vmforge beside qemu-img.

    .venv/bin/python benchmarks/bench_convert_pairs.py [--size 512M] [--rounds 3] \\
        [--vmforge "/path/to/venv/bin/vmforge"] [--pairs raw:qcow2,qcow2:vdi] [--check]

The source of every pair is the mixed image (:func:`vmforge.testing.images.write_mixed`:
random, zero and text pieces of 64 KiB, a third each) converted to the source
format by ``qemu-img``, on ``/dev/shm``.  Each round runs every command once, in
turn (interleaved: the machine's load falls on both tools alike); the target is
removed before each run, outside the timing.  The figures are wall-clock minimum
(median) in ms, and the ratio is qemu-img's time over vmforge's (above 1:
vmforge is faster); the last column is each process's CPU time (user + system,
all its threads; minimum), which a busy machine changes far less than the wall
clock.  ``--check`` compares vmforge's output with qemu-img's byte
for byte (``cmp``) after the last round.

By default the pairs are raw and qcow2 to and from each writable format (luks
aside: it needs a secret, and has its own benchmark in bench_formats.py).
``--vmforge`` is the command that runs vmforge (default: this interpreter's
``-m vmforge.cli.main``); give it a regular install's ``vmforge`` to time what
a user runs (see RESULTS.md for the recipe).  ``--before`` times a second
vmforge (an older build's install) in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from vmforge.block import parse_size
from vmforge.testing.images import write_mixed

FORMATS = ("raw", "qcow2", "qcow", "qed", "vdi", "vpc", "vhdx", "vmdk", "parallels")


def default_pairs() -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for hub in ("raw", "qcow2"):
        for fmt in FORMATS:
            for pair in ((hub, fmt), (fmt, hub)):
                if pair not in pairs:
                    pairs.append(pair)
    return pairs


def run_timed(cmd: list[str], dst: str) -> tuple[float, float]:
    """Wall-clock seconds and the process's CPU seconds (user + system, all threads)."""
    if os.path.exists(dst):
        os.unlink(dst)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="512M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vmforge", default=f"{shlex.quote(sys.executable)} -m vmforge.cli.main")
    ap.add_argument("--before", help="another vmforge command (an older build), timed in "
                    "the same rounds: a before/after column")
    ap.add_argument("--pairs", help="src:dst,... (default: raw and qcow2 to and from each)")
    ap.add_argument("--check", action="store_true", help="cmp vmforge's output with qemu-img's")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    pairs = ([tuple(p.split(":", 1)) for p in args.pairs.split(",")] if args.pairs
             else default_pairs())
    size = parse_size(args.size)
    vmforge = [*shlex.split(args.vmforge), "img", "convert"]
    tools = {"vmforge": vmforge, "qemu-img": ["qemu-img", "convert"]}
    if args.before:
        tools["before"] = [*shlex.split(args.before), "img", "convert"]
    with tempfile.TemporaryDirectory(prefix="vmforge-pairs-", dir=args.dir) as d:
        raw = os.path.join(d, "src.raw")
        write_mixed(raw, size)
        sources = {"raw": raw}
        for src_fmt, _ in pairs:
            if src_fmt not in sources:
                sources[src_fmt] = os.path.join(d, f"src.{src_fmt}")
                subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", src_fmt, raw,
                                sources[src_fmt]], check=True)
        cmds: dict[tuple[str, str, str], tuple[list[str], str]] = {}
        for src_fmt, dst_fmt in pairs:
            for tool, base in tools.items():
                dst = os.path.join(d, f"out-{tool}.{src_fmt}-{dst_fmt}")
                cmds[(src_fmt, dst_fmt, tool)] = (
                    [*base, "-f", src_fmt, "-O", dst_fmt, sources[src_fmt], dst], dst)
        times: dict[tuple[str, str, str], list[float]] = {k: [] for k in cmds}
        cpu: dict[tuple[str, str, str], list[float]] = {k: [] for k in cmds}
        differs: set[tuple[str, str]] = set()
        for r in range(args.rounds):
            for src_fmt, dst_fmt in pairs:
                outs = []
                for tool in tools:
                    cmd, dst = cmds[(src_fmt, dst_fmt, tool)]
                    wall, used = run_timed(cmd, dst)
                    times[(src_fmt, dst_fmt, tool)].append(wall)
                    cpu[(src_fmt, dst_fmt, tool)].append(used)
                    outs.append(dst)
                if args.check and r == args.rounds - 1 and subprocess.run(
                        ["cmp", "-s", *outs[:2]]).returncode:
                    differs.add((src_fmt, dst_fmt))
                for dst in outs:    # 2 x 512 MiB of memory each on /dev/shm
                    os.unlink(dst)
        print(f"{args.size}, {args.rounds} interleaved rounds, wall min (median) ms")
        head = "| conversion | qemu-img |"
        if args.before:
            head += " vmforge before | before / qemu-img |"
        print(head + " vmforge | vmforge's speed / qemu-img's: min (median) | CPU ms: qemu-img"
              + (" / before" if args.before else "") + " / vmforge |")
        print("|---" * (head.count("|") - 1) + "|---|---|---|")
        for src_fmt, dst_fmt in pairs:
            q = times[(src_fmt, dst_fmt, "qemu-img")]
            v = times[(src_fmt, dst_fmt, "vmforge")]
            qm, vm = min(q), min(v)
            qd, vd = statistics.median(q), statistics.median(v)
            note = " (output differs from qemu-img's)" if (src_fmt, dst_fmt) in differs else ""
            row = f"| {src_fmt} -> {dst_fmt} | {qm * 1e3:.0f} ({qd * 1e3:.0f}) | "
            if args.before:
                b = times[(src_fmt, dst_fmt, "before")]
                bm, bd = min(b), statistics.median(b)
                row += f"{bm * 1e3:.0f} ({bd * 1e3:.0f}) | {qm / bm:.2f}x ({qd / bd:.2f}x) | "
            used = " / ".join(f"{min(cpu[(src_fmt, dst_fmt, t)]) * 1e3:.0f}"
                              for t in ("qemu-img", "before", "vmforge") if t in tools)
            print(row + f"{vm * 1e3:.0f} ({vd * 1e3:.0f}) | {qm / vm:.2f}x ({qd / vd:.2f}x)"
                  f"{note} | {used} |")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
