"""Flattened device trees: build one from the devices a board places, write it
as a DTB (version 17), and read a DTB back (tests, ``dumpdtb`` comparisons).

A board makes a :class:`DeviceTree`, adds ``/cpus``, ``/memory``, ``/chosen``
and a bus node, then asks each placed device for its node::

    tree = DeviceTree()
    soc = tree.root.add("soc")
    soc.set("#address-cells", 2); soc.set("#size-cells", 2)
    uart.fdt_node(tree, soc, FdtPlacement(0x1000_0000, 0x100, irqs=(10,),
                                          interrupt_parent=plic_phandle))
    blob = tree.to_dtb()

Devices implement :class:`FdtContributor`.  Phandles are numbered from 1 in
the order they are asked for; :meth:`DeviceTree.label` names a node so that
other devices find its phandle (``tree.phandle_of("cpu0-intc")``), as labels
do in a ``.dts`` file.

Property values (:meth:`FdtNode.set`): ``str`` a string, a list of ``str`` a
string list, ``int`` one 32-bit cell, a list of ``int`` 32-bit cells, ``bytes``
raw, ``True`` an empty (boolean) property.  64-bit numbers and ``reg``
entries go through :meth:`FdtNode.set_u64` and :meth:`DeviceTree.reg`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from vmforge.errors import VmforgeError
from vmforge.record import FrozenRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable

__all__ = [
    "FDT_MAGIC",
    "DeviceTree",
    "FdtContributor",
    "FdtError",
    "FdtNode",
    "FdtPlacement",
    "parse_dtb",
]

FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9
_HEADER = struct.Struct(">10I")
#: deepest nesting the reader accepts (a guard against hostile blobs)
MAX_DEPTH = 64

PropValue = str | int | bytes | bool | Sequence[str] | Sequence[int]


class FdtError(VmforgeError):
    """A device tree could not be built or a DTB could not be read."""


def _align4(n: int) -> int:
    return (n + 3) & ~3


def encode_value(value: PropValue) -> bytes:
    """The bytes of a property value (see the module doc for the types)."""
    if value is True:
        return b""
    if value is False or value is None:
        raise FdtError("a boolean property is either present (True) or absent")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, int):
        return _cells((value,))
    items = list(value)
    if all(isinstance(v, str) for v in items) and items:
        return b"".join(_encode_str(v) for v in items)  # type: ignore[arg-type]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return _cells(items)  # type: ignore[arg-type]
    raise FdtError(f"cannot encode property value {value!r}")


def _encode_str(s: str) -> bytes:
    raw = s.encode()
    if b"\0" in raw:
        raise FdtError(f"string {s!r} holds a NUL")
    return raw + b"\0"


def _cells(values: Sequence[int]) -> bytes:
    try:        # (in one call: a PCI host's interrupt-map is hundreds of cells)
        return struct.pack(f">{len(values)}I", *values)
    except struct.error:
        pass    # the value that does not fit is named below
    out = bytearray()
    for v in values:
        if not 0 <= v < 1 << 32:
            raise FdtError(f"cell value {v:#x} does not fit 32 bits")
        out += v.to_bytes(4, "big")
    return bytes(out)


def split_cells(value: int, cells: int) -> list[int]:
    """``value`` as ``cells`` big-endian 32-bit cells."""
    if not 0 <= value < 1 << (32 * cells):
        raise FdtError(f"{value:#x} does not fit {cells} cells")
    return [(value >> (32 * (cells - 1 - i))) & 0xFFFFFFFF for i in range(cells)]


class FdtNode:
    """One node: a name (``serial@10000000``), ordered properties, children."""

    def __init__(self, name: str, parent: FdtNode | None = None) -> None:
        if parent is not None and (not name or "/" in name):
            raise FdtError(f"bad node name {name!r}")
        self.name = name
        self.parent = parent
        self.props: dict[str, bytes] = {}
        self.children: list[FdtNode] = []

    # -- building ---------------------------------------------------------------------

    def add(self, name: str) -> FdtNode:
        """A new child node (names are unique among siblings)."""
        if self.child(name) is not None:
            raise FdtError(f"{self.path}: node {name!r} already exists")
        node = FdtNode(name, self)
        self.children.append(node)
        return node

    def set(self, name: str, value: PropValue) -> FdtNode:
        """Set property ``name`` (replacing it); returns the node for chaining."""
        if not name or "\0" in name:
            raise FdtError(f"bad property name {name!r}")
        self.props[name] = encode_value(value)
        return self

    def set_u64(self, name: str, value: int) -> FdtNode:
        """A 64-bit value as two cells (``linux,initrd-start`` and the like)."""
        self.props[name] = _cells(split_cells(value, 2))
        return self

    def delete(self, name: str) -> None:
        self.props.pop(name, None)

    # -- reading ----------------------------------------------------------------------

    def child(self, name: str) -> FdtNode | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    def get(self, name: str) -> bytes | None:
        return self.props.get(name)

    def get_cells(self, name: str) -> list[int] | None:
        raw = self.props.get(name)
        if raw is None:
            return None
        if len(raw) % 4:
            raise FdtError(f"{self.path}: {name} is not a list of cells")
        return [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)]

    def get_int(self, name: str) -> int | None:
        """A property of 1 or 2 cells as one number."""
        cells = self.get_cells(name)
        if cells is None:
            return None
        value = 0
        for c in cells:
            value = value << 32 | c
        return value

    def get_strings(self, name: str) -> list[str] | None:
        raw = self.props.get(name)
        if raw is None:
            return None
        if not raw.endswith(b"\0"):
            raise FdtError(f"{self.path}: {name} is not a string list")
        return [s.decode(errors="replace") for s in raw[:-1].split(b"\0")]

    def get_str(self, name: str) -> str | None:
        items = self.get_strings(name)
        return None if items is None else items[0]

    @property
    def path(self) -> str:
        if self.parent is None:
            return "/"
        up = self.parent.path
        return (up if up.endswith("/") else up + "/") + self.name

    def walk(self) -> Iterator[FdtNode]:
        """This node and every descendant, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()

    def __repr__(self) -> str:
        return f"FdtNode({self.path!r}, {len(self.props)} props, {len(self.children)} children)"


class FdtPlacement(FrozenRecord):
    """Where a board put a device: what its node needs to say."""

    __slots__ = __match_args__ = ("base", "size", "irqs", "interrupt_parent")
    base: int
    size: int
    irqs: tuple[int, ...]
    #: phandle of the interrupt controller the ``irqs`` belong to
    interrupt_parent: int | None

    def __init__(self, base: int, size: int, irqs: tuple[int, ...] = (),
                 interrupt_parent: int | None = None) -> None:
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "irqs", irqs)
        object.__setattr__(self, "interrupt_parent", interrupt_parent)


@runtime_checkable
class FdtContributor(Protocol):
    """A device that describes itself in a device tree."""

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """Add this device's node under ``parent`` and return it."""
        ...


class DeviceTree:
    """A device tree being built (or read back): the root node, phandles, labels."""

    def __init__(self, root: FdtNode | None = None, boot_cpuid: int = 0) -> None:
        self.root = root if root is not None else FdtNode("")
        self.boot_cpuid = boot_cpuid
        self.reserved: list[tuple[int, int]] = []
        self._labels: dict[str, FdtNode] = {}
        self._next_phandle = 1 + max((n.get_int("phandle") or 0 for n in self.root.walk()),
                                     default=0)

    # -- phandles and labels --------------------------------------------------------------

    def phandle(self, node: FdtNode) -> int:
        """The node's phandle, allocating the next free one on first use."""
        have = node.get_int("phandle")
        if have is not None:
            return have
        value = self._next_phandle
        self._next_phandle += 1
        node.set("phandle", value)
        return value

    def label(self, name: str, node: FdtNode) -> FdtNode:
        """Name ``node`` so that others can find it (a ``.dts`` label)."""
        self._labels[name] = node
        return node

    def labelled(self, name: str) -> FdtNode:
        try:
            return self._labels[name]
        except KeyError:
            raise FdtError(f"no node is labelled {name!r} (have: "
                           f"{', '.join(sorted(self._labels)) or 'none'})") from None

    def phandle_of(self, label: str) -> int:
        return self.phandle(self.labelled(label))

    # -- helpers for devices -----------------------------------------------------------------

    @staticmethod
    def cells_of(node: FdtNode) -> tuple[int, int]:
        """``(#address-cells, #size-cells)`` a node gives its children (2, 1 by default)."""
        a = node.get_int("#address-cells")
        s = node.get_int("#size-cells")
        return (2 if a is None else a), (1 if s is None else s)

    def reg(self, node: FdtNode, *ranges: tuple[int, int]) -> FdtNode:
        """Set ``reg`` of ``node`` from ``(base, size)`` pairs in its parent's cells."""
        if node.parent is None:
            raise FdtError("the root has no reg")
        acells, scells = self.cells_of(node.parent)
        cells: list[int] = []
        for base, size in ranges:
            cells += split_cells(base, acells) + split_cells(size, scells)
        node.props["reg"] = _cells(cells)
        return node

    def device_node(self, parent: FdtNode, prefix: str, place: FdtPlacement,
                    compatible: str | Sequence[str]) -> FdtNode:
        """The common shape: ``prefix@base`` with compatible, reg and interrupts."""
        node = parent.add(f"{prefix}@{place.base:x}")
        node.set("compatible", compatible)
        self.reg(node, (place.base, place.size))
        if place.irqs:
            node.set("interrupts", list(place.irqs))
            if place.interrupt_parent is not None:
                node.set("interrupt-parent", place.interrupt_parent)
        return node

    def node_at(self, path: str) -> FdtNode | None:
        """The node at an absolute path (``/soc/serial@10000000``), or None."""
        node: FdtNode | None = self.root
        for part in (p for p in path.split("/") if p):
            node = node.child(part) if node is not None else None
        return node

    # -- the blob ---------------------------------------------------------------------------

    def to_dtb(self) -> bytes:
        """The flattened tree: header, memory reservations, structure, strings."""
        strings = bytearray()
        offsets: dict[str, int] = {}
        body = bytearray()

        def name_off(name: str) -> int:
            off = offsets.get(name)
            if off is None:
                off = offsets[name] = len(strings)
                strings.extend(name.encode() + b"\0")
            return off

        def emit(node: FdtNode) -> None:
            body.extend(struct.pack(">I", FDT_BEGIN_NODE))
            raw = node.name.encode() + b"\0"
            body.extend(raw.ljust(_align4(len(raw)), b"\0"))
            for key, value in node.props.items():
                body.extend(struct.pack(">III", FDT_PROP, len(value), name_off(key)))
                body.extend(value.ljust(_align4(len(value)), b"\0"))
            for c in node.children:
                emit(c)
            body.extend(struct.pack(">I", FDT_END_NODE))

        emit(self.root)
        body.extend(struct.pack(">I", FDT_END))
        rsv = bytearray()
        for addr, size in self.reserved:
            rsv += struct.pack(">QQ", addr, size)
        rsv += struct.pack(">QQ", 0, 0)
        off_rsv = _HEADER.size  # 40: already 8-aligned, as the reservation map must be
        off_struct = off_rsv + len(rsv)
        off_strings = off_struct + len(body)
        total = off_strings + len(strings)
        header = _HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsv, FDT_VERSION,
                              FDT_LAST_COMP_VERSION, self.boot_cpuid, len(strings), len(body))
        return header + bytes(rsv) + bytes(body) + bytes(strings)


def parse_dtb(blob: bytes) -> DeviceTree:
    """Read a DTB (version 16 or later) into a :class:`DeviceTree`; :class:`FdtError`
    on anything malformed (bounds, tokens, nesting)."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise FdtError("blob shorter than an FDT header")
    (magic, total, off_struct, off_strings, off_rsv, version, _last, boot_cpuid,
     size_strings, size_struct) = _HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise FdtError(f"bad FDT magic {magic:#x}")
    if version < 16 or total > len(blob):
        raise FdtError(f"unsupported version {version} or truncated blob "
                       f"({len(blob)} of {total} bytes)")
    if off_struct + size_struct > total or off_strings + size_strings > total:
        raise FdtError("structure or strings block runs past the blob")
    tree_blob = blob[:total]
    strings = tree_blob[off_strings:off_strings + size_strings]

    reserved: list[tuple[int, int]] = []
    pos = off_rsv
    while True:
        if pos + 16 > total:
            raise FdtError("memory reservation map runs past the blob")
        addr, size = struct.unpack_from(">QQ", tree_blob, pos)
        pos += 16
        if addr == 0 and size == 0:
            break
        reserved.append((addr, size))

    end = off_struct + size_struct
    pos = off_struct
    root: FdtNode | None = None
    stack: list[FdtNode] = []

    def u32() -> int:
        nonlocal pos
        if pos + 4 > end:
            raise FdtError("structure block ends inside a token")
        value = int.from_bytes(tree_blob[pos:pos + 4], "big")
        pos += 4
        return value

    while True:
        token = u32()
        if token == FDT_BEGIN_NODE:
            nul = tree_blob.find(b"\0", pos, end)
            if nul < 0:
                raise FdtError("unterminated node name")
            name = tree_blob[pos:nul].decode(errors="replace")
            pos = off_struct + _align4(nul + 1 - off_struct)
            if not stack:
                if root is not None:
                    raise FdtError("more than one root node")
                node = root = FdtNode("")
            else:
                node = FdtNode(name, stack[-1])
                stack[-1].children.append(node)
            stack.append(node)
            if len(stack) > MAX_DEPTH:
                raise FdtError("nodes nested too deep")
        elif token == FDT_END_NODE:
            if not stack:
                raise FdtError("END_NODE without a node")
            stack.pop()
        elif token == FDT_PROP:
            length, nameoff = u32(), u32()
            if not stack:
                raise FdtError("property outside a node")
            if pos + length > end or nameoff >= len(strings):
                raise FdtError("property runs past the structure or strings block")
            nul = strings.find(b"\0", nameoff)
            if nul < 0:
                raise FdtError("unterminated property name")
            stack[-1].props[strings[nameoff:nul].decode(errors="replace")] = \
                tree_blob[pos:pos + length]
            pos = off_struct + _align4(pos + length - off_struct)
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            break
        else:
            raise FdtError(f"unknown token {token:#x} at {pos - 4:#x}")
    if root is None or stack:
        raise FdtError("structure block is not one complete tree")
    tree = DeviceTree(root, boot_cpuid)
    tree.reserved = reserved
    return tree
