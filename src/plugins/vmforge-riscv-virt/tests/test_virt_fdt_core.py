"""vmforge.fdt: the writer's format, the reader's guards against bad blobs."""

from __future__ import annotations

import random
import struct

import pytest

from vmforge.fdt import FDT_MAGIC, DeviceTree, FdtError, FdtPlacement, parse_dtb


def small_tree() -> DeviceTree:
    tree = DeviceTree()
    root = tree.root
    root.set("#address-cells", 2).set("#size-cells", 2).set("model", "m")
    soc = root.add("soc")
    soc.set("#address-cells", 1).set("#size-cells", 1).set("ranges", True)
    intc = soc.add("intc@100")
    tree.label("intc", intc)
    tree.reg(intc, (0x100, 0x10))
    dev = tree.device_node(soc, "dev", FdtPlacement(0x2000, 0x100, (5, 6), tree.phandle(intc)),
                           ["vendor,a", "vendor,b"])
    dev.set_u64("big", 0x1_2345_6789)
    tree.reserved.append((0x8000_0000, 0x1000))
    return tree


def test_header_and_layout():
    blob = small_tree().to_dtb()
    (magic, total, off_struct, off_strings, off_rsv, version, last, cpu,
     size_strings, size_struct) = struct.unpack_from(">10I", blob)
    assert (magic, version, last, cpu) == (FDT_MAGIC, 17, 16, 0)
    assert total == len(blob) and off_rsv % 8 == 0 and off_struct % 4 == 0
    assert off_struct + size_struct == off_strings and off_strings + size_strings == total
    assert blob[off_strings:].count(b"#address-cells\0") == 1  # names are shared


def test_round_trip_and_typed_values():
    tree = parse_dtb(small_tree().to_dtb())
    assert tree.reserved == [(0x8000_0000, 0x1000)]
    intc = tree.node_at("/soc/intc@100")
    dev = tree.node_at("/soc/dev@2000")
    assert intc.get_int("phandle") == 1
    assert intc.get_cells("reg") == [0x100, 0x10]  # the parent's 1 + 1 cells
    assert dev.get_strings("compatible") == ["vendor,a", "vendor,b"]
    assert dev.get_cells("interrupts") == [5, 6]
    assert dev.get_int("interrupt-parent") == 1
    assert dev.get_int("big") == 0x1_2345_6789
    assert tree.node_at("/soc").get("ranges") == b""
    assert tree.node_at("/").get_str("model") == "m"
    assert dev.path == "/soc/dev@2000" and tree.node_at("/nope") is None
    assert parse_dtb(tree.to_dtb()).to_dtb() == tree.to_dtb()


def test_phandles_labels_and_errors():
    tree = small_tree()
    assert tree.phandle_of("intc") == 1
    node = tree.root.add("other")
    assert tree.phandle(node) == 2 and tree.phandle(node) == 2
    with pytest.raises(FdtError):
        tree.labelled("missing")
    with pytest.raises(FdtError):
        tree.root.add("other")  # siblings have unique names
    with pytest.raises(FdtError):
        node.set("x", 1 << 32)  # a cell is 32 bits
    with pytest.raises(FdtError):
        node.set("x", "a\0b")
    with pytest.raises(FdtError):
        node.set("x", False)


def test_reg_overflow_of_the_parent_cells_is_refused():
    tree = small_tree()
    tree.reg(tree.node_at("/soc"), (1 << 32, 1))  # / gives 2 cells: fits
    with pytest.raises(FdtError):
        tree.reg(tree.node_at("/soc/intc@100"), (1 << 32, 1))  # /soc gives 1 cell


@pytest.mark.parametrize("blob", [
    b"", b"\xd0\x0d\xfe\xed", bytes(40), struct.pack(">10I", FDT_MAGIC, 40, 0, 0, 0, 17, 16,
                                                     0, 0, 0),
])
def test_short_or_empty_blobs_are_errors(blob):
    with pytest.raises(FdtError):
        parse_dtb(blob)


def test_fuzzed_blobs_raise_only_fdt_errors():
    good = small_tree().to_dtb()
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(1500):
        blob = bytearray(good)
        if rng.random() < 0.3:
            blob = blob[:rng.randrange(len(blob))]
        for _ in range(rng.randrange(1, 4)):
            if blob:
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        try:
            parse_dtb(bytes(blob))
            outcomes["ok"] += 1
        except FdtError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 10


def test_deep_nesting_is_refused():
    tree = DeviceTree()
    node = tree.root
    for i in range(100):
        node = node.add(f"n{i}")
    with pytest.raises(FdtError):
        parse_dtb(tree.to_dtb())
