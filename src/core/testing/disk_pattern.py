"""A checksummed disk pattern that a busybox guest writes while block jobs run,
and that the guest and the host verify.

Each 4 KiB block ``n`` of generation ``g`` holds a header line
``VMF <n> <g> <md5>`` and then ``VMF <n> <g>`` lines repeated to the end of the
block; ``<md5>`` is the MD5 of everything after the header.  A block therefore
says which block and which generation it is and whether it is whole (a torn or
misplaced write, or a sector of another generation, breaks the sum).  The
guest's writer (:data:`GUEST_SCRIPT`, busybox ash) writes generation after
generation over a set of blocks with ``O_DIRECT`` and logs ``n g`` once each
write has returned; the last generation logged for a block is what the block
must hold.  Generation 0 is what the host lays down before boot
(:func:`fill_image`).

Guest side (after ``. /tmp/vmf.sh``)::

    vmf_start 1 "0 17 34"   # writer from generation 1 over blocks 0, 17, 34, in the background
    vmf_hold / vmf_release  # hold the writer between two writes (VMF-HELD once it is:
                            # it echoed this hold's token, all its writes logged)
    vmf_stop                # stop it and wait (VMF-STOPPED)
    vmf_expect              # the last generation of each block: "n:g ..." then VMF-END
    vmf_verify n:g ...      # read each block back (O_DIRECT): VMF-VERIFY ok=K bad=B
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping

__all__ = ["BLOCK", "GUEST_SCRIPT", "block_bytes", "check_block", "fill_image",
           "parse_expect", "spread_blocks", "verify_image"]

BLOCK = 4096
#: bytes after the header line that the header's MD5 covers (the header is at most
#: ``VMF 99999999 99999999 <32 hex>\n`` = 55 bytes; the body starts after it)
_MAX_HEADER = 55


def _header_and_body(n: int, g: int) -> tuple[bytes, bytes]:
    line = f"VMF {n} {g}".encode()
    body_len = BLOCK - len(line) - 34          # " " + 32 hex + "\n"
    rep = line + b"\n"
    body = (rep * (body_len // len(rep) + 1))[:body_len]
    return line, body


def block_bytes(n: int, g: int) -> bytes:
    """Block ``n`` as generation ``g`` writes it (what the guest script writes)."""
    line, body = _header_and_body(n, g)
    return line + b" " + hashlib.md5(body).hexdigest().encode() + b"\n" + body


def check_block(data: bytes) -> tuple[int, int] | None:
    """``(n, g)`` a block says it is, if it is whole; None if not a whole block
    of the pattern."""
    m = re.match(rb"VMF (\d+) (\d+) ([0-9a-f]{32})\n", data[:_MAX_HEADER + 1])
    if m is None:
        return None
    body = data[m.end():]
    if len(data) != BLOCK or hashlib.md5(body).hexdigest().encode() != m.group(3):
        return None
    return int(m.group(1)), int(m.group(2))


def fill_image(backend: object, blocks: Iterable[int], generation: int = 0) -> None:
    """Write ``blocks`` of generation ``generation`` into an opened
    :class:`~vmforge.block.backend.BlockBackend` (the host's initial pattern)."""
    write = backend.write                      # type: ignore[attr-defined]
    for n in blocks:
        write(n * BLOCK, block_bytes(n, generation))


def spread_blocks(disk_blocks: int, count: int) -> list[int]:
    """``count`` block numbers spread over a disk of ``disk_blocks`` blocks, not in
    order (so a copy meets writes ahead of and behind it)."""
    step = max(1, disk_blocks // count)
    picks = [(i * step + (i * 7) % step) % disk_blocks for i in range(count)]
    return sorted(set(picks), key=lambda n: (n * 2654435761) % 4093)


def parse_expect(text: str) -> dict[int, int]:
    """The ``n:g`` pairs :func:`vmf_expect` printed (before ``VMF-END``)."""
    return {int(n): int(g) for n, g in re.findall(r"(\d+):(\d+)", text.split("VMF-END")[0])}


def verify_image(read: Callable[[int, int], bytes], expected: Mapping[int, int],
                 disk_blocks: int, default: Callable[[int], int | None]) -> list[str]:
    """Every block of a disk against what it must hold: ``expected[n]`` for the
    blocks the guest wrote, else ``default(n)`` (a generation, or None: the block
    must read as zeros).  ``read(offset, length)`` reads the image.  Returns the
    problems, one line each (empty: all good)."""
    problems = []
    chunk = 256
    for first in range(0, disk_blocks, chunk):
        data = read(first * BLOCK, min(chunk, disk_blocks - first) * BLOCK)
        for i in range(len(data) // BLOCK):
            n = first + i
            block = data[i * BLOCK:(i + 1) * BLOCK]
            want = expected.get(n, default(n))
            if want is None:
                if block.count(0) != BLOCK:
                    problems.append(f"block {n}: not zeros ({check_block(block)})")
                continue
            got = check_block(block)
            if got != (n, want):
                problems.append(f"block {n}: {got} instead of {(n, want)}")
    return problems


#: busybox ash functions; ``. /tmp/vmf.sh`` after writing this to the guest
GUEST_SCRIPT = r"""
vmf_block() {
  h="VMF $1 $2"
  yes "$h" | head -c $((4096 - ${#h} - 34)) > /tmp/vmf.f
  set -- $(md5sum /tmp/vmf.f)
  { echo "$h $1"; cat /tmp/vmf.f; } > /tmp/vmf.b
}
vmf_writer() {
  g=$1
  while [ ! -e /tmp/vmf.stop ]; do
    for n in $2; do
      while [ -e /tmp/vmf.hold ]; do
        read -r t 2>/dev/null < /tmp/vmf.hold && echo "$t" > /tmp/vmf.held; usleep 20000
      done
      [ -e /tmp/vmf.stop ] && break
      vmf_block $n $g
      dd if=/tmp/vmf.b of=/dev/vda bs=4096 seek=$n count=1 oflag=direct conv=notrunc \
        2>/dev/null && echo "$n $g" >> /tmp/vmf.log
    done
    g=$((g + 1))
  done
}
vmf_start() { rm -f /tmp/vmf.stop /tmp/vmf.hold; echo 0 > /tmp/vmf.held; vmf_writer "$1" "$2" & }
vmf_hold() {
  vmf_token=$((${vmf_token:-0} + 1)); echo $vmf_token > /tmp/vmf.hold
  h=; while [ "$h" != $vmf_token ]; do usleep 20000; read -r h < /tmp/vmf.held; done
  echo VMF-HELD
}
vmf_release() { rm -f /tmp/vmf.hold; echo VMF-RELEASED; }
vmf_stop() { touch /tmp/vmf.stop; rm -f /tmp/vmf.hold; wait; echo VMF-STOPPED; }
vmf_expect() {
  [ -e /tmp/vmf.log ] && awk '{g[$1] = $2} END {for (n in g) printf "%s:%s\n", n, g[n]}' \
    /tmp/vmf.log
  echo VMF-END
}
vmf_check() {
  dd if=/dev/vda of=/tmp/vmf.r bs=4096 skip=$1 count=1 iflag=direct 2>/dev/null
  read -r tag n g sum < /tmp/vmf.r
  [ "$tag $n $g" = "VMF $1 $2" ] || return 1
  set -- $(tail -c +$((${#tag} + ${#n} + ${#g} + 37)) /tmp/vmf.r | md5sum)
  [ "$1" = "$sum" ]
}
vmf_verify() {
  ok=0; bad=0
  for p in "$@"; do
    if vmf_check ${p%:*} ${p#*:}; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "VMF-BAD $p"; fi
  done
  echo "VMF-VERIFY ok=$ok bad=$bad"
}
vmf_count() { wc -l < /tmp/vmf.log; }
"""
