"""vmforge.accel.kvm.cpu_model without a host: QEMU 7.2's ``qemu64`` on KVM for an
Intel and an AMD host (the microvm test compares a guest's view with QEMU on this
host's vendor only)."""

from __future__ import annotations

from vmforge.accel.kvm.cpu_model import cpuid_for
from vmforge.accel.kvm.state import CpuidEntry

INTEL = (0x756E6547, 0x49656E69, 0x6C65746E)     # "GenuineIntel" as ebx, edx, ecx
AMD = (0x68747541, 0x69746E65, 0x444D4163)       # "AuthenticAMD"


def _supported(vendor: tuple[int, int, int]) -> list[CpuidEntry]:
    e = CpuidEntry
    return [e(function=0, index=0, flags=0, eax=0x1B, ebx=vendor[0], edx=vendor[1],
              ecx=vendor[2]),
            e(function=1, index=0, flags=0, eax=0x806F8, ebx=0, ecx=0xFFFFFFFF,
              edx=0xFFFFFFFF),
            e(function=7, index=0, flags=1, eax=2, ebx=0x1802852, ecx=0x1A010004, edx=0),
            e(function=7, index=1, flags=1, eax=0x1C30, ebx=0, ecx=0, edx=0x4000),
            e(function=7, index=2, flags=1, eax=0, ebx=0, ecx=0, edx=1),
            e(function=0xD, index=0, flags=1, eax=0xE7, ebx=0x240, ecx=0xA80, edx=0),
            e(function=0x80000008, index=0, flags=0, eax=0x3930, ebx=0, ecx=0, edx=0)]


def _leaves(vendor: tuple[int, int, int]) -> dict[tuple[int, int], CpuidEntry]:
    return {(x.function, x.index): x for x in cpuid_for("qemu64", _supported(vendor), 0, 1)}


def test_the_vendor_is_the_hosts_as_qemu_sets_it_on_kvm() -> None:
    for vendor in (INTEL, AMD):
        got = _leaves(vendor)
        for fn in (0, 0x80000000):
            assert (got[fn, 0].ebx, got[fn, 0].edx, got[fn, 0].ecx) == vendor


def test_legacy_caches_on_intel_none_on_amd() -> None:
    intel, amd = _leaves(INTEL), _leaves(AMD)
    assert (intel[2, 0].eax, intel[2, 0].ecx, intel[2, 0].edx) == (1, 0x4D, 0x2C307D)
    assert [intel[4, i].eax for i in range(5)] == [0x121, 0x122, 0x143, 0x163, 0]
    assert intel[4, 2].ecx + 1 == 4096 and intel[4, 3].edx == 6      # 4 MiB L2; L3 inclusive
    for key in [(2, 0)] + [(4, i) for i in range(5)]:
        x = amd[key]
        assert (x.eax, x.ebx, x.ecx, x.edx) == (0, 0, 0, 0), key


def test_leaf_7_subleaf_0_only_and_48_linear_address_bits() -> None:
    got = _leaves(INTEL)
    assert (7, 0) in got and (7, 1) not in got and (7, 2) not in got
    assert got[0x80000008, 0].eax == 0x3030       # host's 48 physical bits, 48 linear
