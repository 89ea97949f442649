"""KVM's binary statistics (``KVM_GET_STATS_FD``, Linux 5.14+): the counters the
kernel keeps per VM and per vCPU (exits, halts, interrupt injections, ...), read
from the file descriptor it hands out, as QEMU's ``info stats`` does.

The layout is the kernel's ``struct kvm_stats_header`` (flags, name_size,
num_desc, id_offset, desc_offset, data_offset: six u32) and, per statistic, a
``struct kvm_stats_desc`` (flags u32, exponent s16, size u16, offset u32,
bucket_size u32, then a name of ``name_size`` bytes); the values are ``size``
u64 at ``data_offset + offset`` (Documentation/virt/kvm/api.rst, 4.133).
"""

from __future__ import annotations

import fcntl
import os
import struct

__all__ = ["KVM_GET_STATS_FD", "read_stats"]

#: ``_IO(KVMIO, 0xce)``
KVM_GET_STATS_FD = (0xAE << 8) | 0xCE
_HEADER = struct.Struct("<6I")
_DESC = struct.Struct("<IhHII")


def read_stats(fd: int) -> dict[str, int | list[int]]:
    """The statistics of the VM or vCPU file descriptor ``fd`` by name (a list for
    histograms); raises OSError where the kernel has no binary statistics."""
    sfd = fcntl.ioctl(fd, KVM_GET_STATS_FD, 0)
    try:
        header = os.pread(sfd, _HEADER.size, 0)
        _flags, name_size, num_desc, _id_off, desc_off, data_off = _HEADER.unpack(header)
        step = _DESC.size + name_size
        descs = os.pread(sfd, step * num_desc, desc_off)
        out: dict[str, int | list[int]] = {}
        for i in range(num_desc):
            _f, _exp, size, offset, _bucket = _DESC.unpack_from(descs, i * step)
            raw = descs[i * step + _DESC.size:(i + 1) * step]
            name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
            data = os.pread(sfd, 8 * size, data_off + offset)
            values = list(struct.unpack(f"<{size}Q", data))
            out[name] = values[0] if size == 1 else values
        return out
    finally:
        os.close(sfd)
