"""vmforge.record: the block layer's records behave as the dataclasses they were
(constructor keywords, equality, hashing, repr, frozenness, and dataclasses' own
functions), without importing dataclasses."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from vmforge.block import BlockStatus as S
from vmforge.block import (
    CheckResult,
    CreateOption,
    Extent,
    ImageInfo,
    Layer,
    OptionValueError,
    SnapshotInfo,
)
from vmforge.record import FrozenRecord, Record

#: each record class, its fields in order, and whether it is frozen
RECORDS = [
    (Extent, ("offset", "length", "status", "host_offset", "depth", "filename"), True),
    (CreateOption, ("name", "type", "default", "help", "choices", "refused"), True),
    (SnapshotInfo, ("id", "name", "vm_state_size", "date_sec", "date_nsec", "vm_clock_nsec",
                    "icount"), True),
    (CheckResult, ("filename", "format", "corruptions", "leaks", "check_errors",
                   "corruptions_fixed", "leaks_fixed", "image_end_offset", "messages",
                   "total_clusters", "allocated_clusters", "fragmented_clusters",
                   "compressed_clusters"), False),
    (ImageInfo, ("filename", "format", "virtual_size", "actual_size", "cluster_size",
                 "backing_filename", "backing_format", "dirty", "format_specific",
                 "encrypted"), False),
    (Layer, ("driver", "format", "lock"), False),
]


@pytest.mark.parametrize("cls,names,frozen", RECORDS, ids=[r[0].__name__ for r in RECORDS])
def test_records_are_plain_classes_with_dataclass_fields(cls, names, frozen) -> None:
    assert issubclass(cls, FrozenRecord if frozen else Record)
    assert "__dict__" not in dir(cls) and cls.__slots__ == names
    assert cls.__match_args__ == names
    assert tuple(f.name for f in dataclasses.fields(cls)) == names
    assert dataclasses.is_dataclass(cls)


def test_extent_as_a_frozen_dataclass() -> None:
    e = Extent(0, 512, S.DATA | S.ALLOCATED, host_offset=4096)
    assert e == Extent(offset=0, length=512, status=S.DATA | S.ALLOCATED, host_offset=4096,
                       depth=0, filename=None)
    assert e != Extent(0, 512, S.DATA | S.ALLOCATED)
    assert e != (0, 512, S.DATA | S.ALLOCATED, 4096, 0, None)
    assert hash(e) == hash(Extent(0, 512, S.DATA | S.ALLOCATED, 4096))
    assert len({e, Extent(0, 512, S.DATA | S.ALLOCATED, 4096)}) == 1
    assert repr(e) == ("Extent(offset=0, length=512, status=<BlockStatus.DATA|ALLOCATED: 5>, "
                       "host_offset=4096, depth=0, filename=None)")
    assert (e.end, e.is_data, e.is_zero, e.is_allocated) == (512, True, False, True)
    with pytest.raises(AttributeError):
        e.length = 1
    with pytest.raises(AttributeError):
        del e.offset
    with pytest.raises(AttributeError):
        e.other = 1                         # type: ignore[attr-defined]
    longer = dataclasses.replace(e, length=1024)
    assert (longer.length, longer.host_offset, type(longer)) == (1024, 4096, Extent)
    assert dataclasses.asdict(e) == {"offset": 0, "length": 512, "status": S.DATA | S.ALLOCATED,
                                     "host_offset": 4096, "depth": 0, "filename": None}
    assert dataclasses.astuple(e) == (0, 512, S.DATA | S.ALLOCATED, 4096, 0, None)
    assert copy.copy(e) == e and copy.deepcopy(e) == e and pickle.loads(pickle.dumps(e)) == e
    match e:
        case Extent(0, length, status):
            assert (length, status) == (512, S.DATA | S.ALLOCATED)
        case _:
            pytest.fail("no match")


def test_mutable_records_as_dataclasses() -> None:
    a, b = CheckResult("f", "qcow2"), CheckResult("f", "qcow2")
    assert a == b and a.messages == [] and a.messages is not b.messages
    a.messages.append("x")
    a.corruptions += 1
    assert a != b and not a.clean and b.clean
    with pytest.raises(TypeError):
        hash(a)
    assert dataclasses.fields(CheckResult)[8].default is None      # messages: none shared
    info = ImageInfo("f", "raw", 1, 2, dirty=True)
    assert info.format_specific == {} and info.format_specific is not ImageInfo(
        "f", "raw", 1, 2).format_specific
    assert repr(info).startswith("ImageInfo(filename='f', format='raw', virtual_size=1, ")
    assert dataclasses.replace(info, virtual_size=3) == ImageInfo("f", "raw", 3, 2, dirty=True)
    assert copy.deepcopy(info) == info and pickle.loads(pickle.dumps(info)) == info
    snap = SnapshotInfo("1", "s", date_sec=5)
    assert dataclasses.replace(snap, id="--") == SnapshotInfo("--", "s", 0, 5)
    assert dataclasses.fields(SnapshotInfo)[2].default == 0


def test_create_option_parse() -> None:
    opt = CreateOption("size", int, 0, "the size")
    assert opt.parse("1k") == 1024 and opt == CreateOption("size", int, 0, "the size")
    flag = CreateOption(name="on", type=bool, default=False, help="h", choices=(True,))
    assert flag.parse("on") is True
    with pytest.raises(OptionValueError, match="does not accept value 'False'") as exc:
        flag.parse("off")
    assert exc.value.option == "on" and not exc.value.typed
    with pytest.raises(OptionValueError, match="expects 'on' or 'off'") as exc:
        flag.parse("1")                 # QemuOpts' words only (y/yes/true, n/no/false)
    assert exc.value.typed
