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
for byte (``cmp``) after the last round (not a luks target's: its keys are random).

By default the pairs are raw and qcow2 to and from each writable format, luks
included: both tools are given the same secret (``--object secret``), a luks
source is opened with ``--image-opts``, a luks target is made with
``-o key-secret=sec0,iter-time=10`` (the key slot's PBKDF2 calibrated to 10 ms
by each tool; qemu-img's "Unable to get accurate CPU usage", a busy host's
flake of its calibration, is retried and the failed run not counted).
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
from collections.abc import Callable

from vmforge.block import parse_size
from vmforge.testing.images import write_mixed

FORMATS = ("raw", "qcow2", "qcow", "qed", "vdi", "vpc", "vhdx", "vmdk", "parallels", "luks")
SECRET = "secret,id=sec0,data=bench-secret"
#: a luks image's key slot: PBKDF2 calibrated to 10 ms (the default, 2 s, would be
#: most of a run and measure nothing of the copy)
LUKS_CREATE = ["-o", "key-secret=sec0,iter-time=10"]
_PBKDF_FLAKE = "Unable to get accurate CPU usage"


def default_pairs() -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for hub in ("raw", "qcow2"):
        for fmt in FORMATS:
            for pair in ((hub, fmt), (fmt, hub)):
                if pair not in pairs:
                    pairs.append(pair)
    return pairs


def convert_args(src_fmt: str, src: str, dst_fmt: str, dst: str) -> list[str]:
    """``convert``'s arguments (after the sub-command), the same for both tools."""
    secret = ["--object", SECRET] if "luks" in (src_fmt, dst_fmt) else []
    source = (["--image-opts", f"driver=luks,key-secret=sec0,file.filename={src}"]
              if src_fmt == "luks" else ["-f", src_fmt, src])
    target = ["-O", dst_fmt, *(LUKS_CREATE if dst_fmt == "luks" else [])]
    return [*secret, *target, *source, dst]


def _retrying(attempt: Callable[[], subprocess.CompletedProcess[str]]) -> None:
    """``attempt()`` again while qemu-img's PBKDF2 calibration flakes (a few times);
    raise with its stderr when it fails otherwise."""
    for pause in (0.1, 0.3, 1.0, 2.0, None):
        r = attempt()
        if not r.returncode:
            return
        if _PBKDF_FLAKE not in r.stderr or pause is None:
            raise subprocess.CalledProcessError(r.returncode, r.args, None, r.stderr)
        time.sleep(pause)


def run_timed(cmd: list[str], dst: str) -> tuple[float, float]:
    """Wall-clock seconds and the process's CPU seconds (user + system, all threads)
    of the run that succeeded."""
    timed: list[tuple[float, float]] = []

    def attempt() -> subprocess.CompletedProcess[str]:
        if os.path.exists(dst):
            os.unlink(dst)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        timed.append((wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime))
        return r

    _retrying(attempt)
    return timed[-1]


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
                cmd = ["qemu-img", "convert", *convert_args("raw", raw, src_fmt,
                                                            sources[src_fmt])]
                _retrying(lambda cmd=cmd: subprocess.run(cmd, capture_output=True, text=True))
        cmds: dict[tuple[str, str, str], tuple[list[str], str]] = {}
        for src_fmt, dst_fmt in pairs:
            for tool, base in tools.items():
                dst = os.path.join(d, f"out-{tool}.{src_fmt}-{dst_fmt}")
                cmds[(src_fmt, dst_fmt, tool)] = (
                    [*base, *convert_args(src_fmt, sources[src_fmt], dst_fmt, dst)], dst)
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
                if args.check and r == args.rounds - 1 and dst_fmt != "luks" and subprocess.run(
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
