"""vmforge.flags.Flags answers as enum.IntFlag does (Python 3.11), for the block
layer's BlockStatus and Perm, which were IntFlags."""

from __future__ import annotations

import copy
import enum
import json
import pickle

import pytest

from vmforge.block import BlockStatus
from vmforge.block.locking import Perm
from vmforge.flags import Flags


def _reference(cls: type[Flags]) -> type[enum.IntFlag]:
    ref = enum.IntFlag(cls.__name__, [(m.name, int(m)) for m in cls.members()])
    ref.__qualname__ = cls.__qualname__
    return ref


def _same(a: object, b: object) -> None:
    """``a`` (a Flags value) and ``b`` (the IntFlag's) look and compare the same."""
    assert (type(a) is int) == (type(b) is int), (a, b)
    assert repr(a) == repr(b)
    assert str(a) == str(b) and f"{a}" == f"{b}" and f"{a:x}" == f"{b:x}"
    assert a == b and hash(a) == hash(b) and bool(a) == bool(b)
    if not isinstance(b, int) or type(b) is int:
        return
    assert a.name == b.name and a.value == b.value      # type: ignore[attr-defined]
    assert [repr(m) for m in a] == [repr(m) for m in b]  # type: ignore[attr-defined]
    assert len(a) == len(b)                             # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [BlockStatus, Perm])
def test_flags_behave_as_intflag(cls: type[Flags]) -> None:
    ref = _reference(cls)
    assert [m.name for m in cls.members()] == [m.name for m in ref]
    assert isinstance(cls.members()[0], cls) and isinstance(cls.members()[0], int)
    values = [*range(-20, 40), True, False]
    for v in values:
        a, b = cls(v), ref(v)
        _same(a, b)
        _same(~a, ~b)
        assert cls(v) is a
        for w in range(-3, 20):
            _same(a | w, b | w)
            _same(w | a, w | b)
            _same(a & w, b & w)
            _same(w & a, w & b)
            _same(a ^ w, b ^ w)
            _same(a | cls(w), b | ref(w))
            _same(a + w, b + w)
            assert (cls(w) in a) == (ref(w) in b)
        with pytest.raises(TypeError, match="unsupported operand type"):
            1 in a  # noqa: B015
        assert pickle.loads(pickle.dumps(a)) is a and copy.deepcopy(a) is a
        assert json.dumps([a]) == json.dumps([b])
    for member in cls.members():
        assert getattr(cls, member.name) is member is cls(int(member))
    for bad in (1.5, "1", None):
        with pytest.raises(ValueError, match="is not a valid"):
            cls(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cls.members()[0] | 1.5  # type: ignore[operator]


def test_block_status_and_perm_members() -> None:
    assert [(m.name, int(m)) for m in BlockStatus.members()] == [
        ("DATA", 1), ("ZERO", 2), ("ALLOCATED", 4), ("COMPRESSED", 8)]
    assert [(m.name, int(m)) for m in Perm.members()] == [
        ("READ", 1), ("WRITE", 2), ("WRITE_UNCHANGED", 4), ("RESIZE", 8)]
    assert repr(BlockStatus.DATA | BlockStatus.ALLOCATED) == "<BlockStatus.DATA|ALLOCATED: 5>"
    assert BlockStatus.ZERO in BlockStatus(6) and BlockStatus(0).name is None
