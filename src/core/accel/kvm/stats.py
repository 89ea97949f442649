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

__all__ = ["KVM_GET_STATS_FD", "KvmStats", "read_stats"]

#: ``_IO(KVMIO, 0xce)``
KVM_GET_STATS_FD = (0xAE << 8) | 0xCE
_HEADER = struct.Struct("<6I")
_DESC = struct.Struct("<IhHII")


class KvmStats:
    """The statistics file of a VM or vCPU, opened once (the ``KVM_GET_STATS_FD``
    ioctl waits for a running vCPU; reading the file it gives does not), its
    descriptors read once; :meth:`read` gives the current values."""

    def __init__(self, fd: int) -> None:
        self.fd = fcntl.ioctl(fd, KVM_GET_STATS_FD, 0)
        header = os.pread(self.fd, _HEADER.size, 0)
        _flags, name_size, num_desc, _id_off, desc_off, self._data = _HEADER.unpack(header)
        step = _DESC.size + name_size
        descs = os.pread(self.fd, step * num_desc, desc_off)
        self.fields: list[tuple[str, int, int]] = []      # (name, offset, count)
        for i in range(num_desc):
            _f, _exp, size, offset, _bucket = _DESC.unpack_from(descs, i * step)
            raw = descs[i * step + _DESC.size:(i + 1) * step]
            self.fields.append((raw.split(b"\0", 1)[0].decode("ascii", "replace"),
                                offset, size))

    def read(self) -> dict[str, int | list[int]]:
        out: dict[str, int | list[int]] = {}
        for name, offset, size in self.fields:
            data = os.pread(self.fd, 8 * size, self._data + offset)
            values = list(struct.unpack(f"<{size}Q", data))
            out[name] = values[0] if size == 1 else values
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_stats(fd: int) -> dict[str, int | list[int]]:
    """The statistics of the VM or vCPU file descriptor ``fd`` by name (a list for
    histograms), once; raises OSError where the kernel has no binary statistics.
    For a vCPU that may be running, keep a :class:`KvmStats` opened beforehand."""
    stats = KvmStats(fd)
    try:
        return stats.read()
    finally:
        stats.close()
