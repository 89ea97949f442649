"""The virt device tree: built from the placed devices, checked by dtc, and
compared node by node and property by property with QEMU 7.2's ``dumpdtb``."""

from __future__ import annotations

import subprocess

import pytest

from vmforge.chardev import NullChar
from vmforge.fdt import DeviceTree, FdtNode, parse_dtb
from vmforge.virtio.mmio import VirtioMmioTransport
from vmforge_riscv_devices import Clint, GoldfishRtc, Plic, SifiveTest
from vmforge_riscv_virt import VirtFdtConfig, build_virt_fdt
from vmforge_riscv_virt import board as virt
from vmforge_riscv_virt.fdt_virt import DEFAULT_ISA, standard_placements
from vmforge_serial import Ns16550a

MEM = 256 << 20

#: nodes QEMU writes for devices vmforge does not model
QEMU_ONLY = ("/pmu", "/fw-cfg@10100000", "/flash@20000000", "/platform-bus@4000000")
#: properties that hold phandles: name -> cells per entry after the phandle
PHANDLE_PROPS = {"interrupt-parent": 0, "regmap": 0, "cpu": 0, "interrupts-extended": 1}


def virt_tree(harts: int, **cfg) -> DeviceTree:
    placed = standard_placements(
        Plic(num_harts=harts), Clint(num_harts=harts), SifiveTest(), GoldfishRtc(),
        Ns16550a(NullChar()), [VirtioMmioTransport() for _ in range(virt.VIRTIO_COUNT)],
        virt.pcie_host(MEM))
    return build_virt_fdt(VirtFdtConfig(num_harts=harts, mem_size=MEM, **cfg), placed)


def by_phandle(tree: DeviceTree) -> dict[int, str]:
    return {n.get_int("phandle"): n.path for n in tree.root.walk() if "phandle" in n.props}


def comparable(tree: DeviceTree, node: FdtNode) -> dict[str, object]:
    """Properties with phandles replaced by the paths they point at."""
    paths = by_phandle(tree)
    out: dict[str, object] = {}
    for key, raw in node.props.items():
        if key == "phandle":
            out[key] = "<phandle>"
        elif key in PHANDLE_PROPS:
            cells = node.get_cells(key) or []
            step = 1 + PHANDLE_PROPS[key]
            out[key] = [(paths.get(cells[i]), *cells[i + 1:i + step])
                        for i in range(0, len(cells), step)]
        else:
            out[key] = raw
    return out


def nodes(tree: DeviceTree) -> dict[str, FdtNode]:
    return {n.path: n for n in tree.root.walk()}


@pytest.mark.parametrize("harts", [1, 2, 8])
def test_structure_matches_qemu(qemu, harts):
    theirs = parse_dtb(qemu.dumpdtb(harts, "256M"))
    ours = parse_dtb(virt_tree(harts).to_dtb())
    their_nodes = {p: n for p, n in nodes(theirs).items()
                   if not any(p == q or p.startswith(q + "/") for q in QEMU_ONLY)}
    our_nodes = nodes(ours)
    assert sorted(our_nodes) == sorted(their_nodes)
    intended = {
        ("riscv,isa", "cpu"): DEFAULT_ISA.encode() + b"\0",
        ("riscv,ndev", "plic"): (95).to_bytes(4, "big"),
    }
    for path, node in our_nodes.items():
        mine, qemus = comparable(ours, node), comparable(theirs, their_nodes[path])
        if path == "/chosen":
            qemus.pop("rng-seed")  # random per run; ours only when asked
        for (prop, where), value in intended.items():
            if where in path and prop in qemus:
                assert mine[prop] == value
                mine[prop] = qemus[prop]
        assert mine == qemus, path


def test_qemu_really_differs_only_where_documented(qemu):
    theirs = parse_dtb(qemu.dumpdtb(1, "256M"))
    assert theirs.node_at("/soc/plic@c000000").get_int("riscv,ndev") == 96
    assert theirs.node_at("/cpus/cpu@0").get_str("riscv,isa").startswith("rv64imafdc")


def test_chosen_with_kernel_initrd_and_bootargs_matches_qemu(qemu, tmp_path):
    kernel = tmp_path / "kernel.bin"
    kernel.write_bytes(bytes(4096))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 5)
    args = "console=ttyS0 root=/dev/vda rw"
    theirs = parse_dtb(qemu.dumpdtb(2, "256M", "-bios", "none", "-kernel", str(kernel),
                                    "-initrd", str(initrd), "-append", args))
    start = virt.initrd_start(virt.MEMMAP["dram"].base, MEM)  # -bios none: kernel at DRAM
    ours = virt_tree(2, bootargs=args, initrd=(start, start + 1280), rng_seed=bytes(32))
    chosen = ours.node_at("/chosen")
    qchosen = theirs.node_at("/chosen")
    assert sorted(chosen.props) == sorted(qchosen.props)
    for key in ("bootargs", "stdout-path", "linux,initrd-start", "linux,initrd-end"):
        assert chosen.props[key] == qchosen.props[key], key
    assert len(chosen.props["rng-seed"]) == len(qchosen.props["rng-seed"])


def test_high_initrd_uses_two_cells():
    tree = virt_tree(1, initrd=(0x1_2000_0000, 0x1_2000_1000))
    chosen = tree.node_at("/chosen")
    assert chosen.get_cells("linux,initrd-start") == [1, 0x2000_0000]


def test_dtc_reads_our_blob_with_no_more_warnings_than_qemus(qemu, dtc, tmp_path):
    ours = tmp_path / "ours.dtb"
    ours.write_bytes(virt_tree(2, bootargs="console=ttyS0").to_dtb())
    theirs = tmp_path / "qemu.dtb"
    theirs.write_bytes(qemu.dumpdtb(2, "256M"))

    def warnings(path) -> set[str]:
        res = subprocess.run([dtc, "-I", "dtb", "-O", "dts", "-o", "/dev/null", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return {line.split(": ", 1)[-1] for line in res.stderr.splitlines() if line}

    mine = warnings(ours)
    assert mine <= warnings(theirs), mine
    # and back: dtc compiles its own decompilation of our blob
    dts = subprocess.run([dtc, "-I", "dtb", "-O", "dts", str(ours)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert '"riscv-virtio"' in dts and "serial@10000000" in dts
    again = subprocess.run([dtc, "-I", "dts", "-O", "dtb"], input=dts.encode(),
                           capture_output=True, check=True, timeout=60).stdout
    assert nodes(parse_dtb(again)).keys() == nodes(parse_dtb(ours.read_bytes())).keys()


def test_stdout_path_follows_the_uart_and_can_be_overridden():
    assert virt_tree(1).node_at("/chosen").get_str("stdout-path") == "/soc/serial@10000000"
    tree = virt_tree(1, stdout_path="/soc/other")
    assert tree.node_at("/chosen").get_str("stdout-path") == "/soc/other"


def test_device_interrupts_point_at_the_plic():
    tree = virt_tree(2)
    plic = tree.node_at("/soc/plic@c000000").get_int("phandle")
    for path, irq in (("/soc/serial@10000000", 10), ("/soc/rtc@101000", 11),
                      ("/soc/virtio_mmio@10001000", 1), ("/soc/virtio_mmio@10008000", 8)):
        node = tree.node_at(path)
        assert node.get_int("interrupt-parent") == plic
        assert node.get_cells("interrupts") == [irq]


def test_fdt_load_addr_matches_qemus_rom(qemu):
    """QEMU's ROM holds the DTB address; board.fdt_load_addr computes the same."""
    size = len(qemu.dumpdtb(1, "256M"))
    words = qemu.xp_words(0x1000 + 32, 2)
    assert words[1] << 32 | words[0] == virt.fdt_load_addr(0x8000_0000, MEM, size)
    assert virt.fdt_load_addr(0x8000_0000, 8 << 30, 0x2000) == 0xBFE0_0000  # 3 GiB cap
