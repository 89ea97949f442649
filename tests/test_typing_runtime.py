"""vmforge.typing_runtime's Protocol, NamedTuple and Generic behave at run time as
typing's do for the classes vmforge defines with them."""

from __future__ import annotations

import typing

import pytest

from vmforge import typing_runtime as light


def _protocols(t):
    @t.runtime_checkable
    class Port(t.Protocol):
        size: int

        def read(self, offset: int) -> int: ...

    @t.runtime_checkable
    class WidePort(Port, t.Protocol):
        def write(self, offset: int, value: int) -> None: ...

    class Plain(t.Protocol):
        def read(self, offset: int) -> int: ...

    class Explicit(Port):
        size = 4

        def read(self, offset: int) -> int:
            return offset

    return Port, WidePort, Plain, Explicit


class _Full:
    size = 1

    def read(self, offset: int) -> int:
        return 0

    def write(self, offset: int, value: int) -> None:
        pass


class _ReadOnly:
    size = 2

    def read(self, offset: int) -> int:
        return 0


class _Blocked(_Full):
    read = None           # a method set to None does not count


class _NoSize:
    def read(self, offset: int) -> int:
        return 0


def test_protocols_answer_isinstance_as_typings() -> None:
    objects = [_Full(), _ReadOnly(), _Blocked(), _NoSize(), object(), 3]
    for mine, theirs in zip(_protocols(light), _protocols(typing), strict=True):
        if mine.__name__ == "Plain":
            for m in (mine, theirs):
                with pytest.raises(TypeError, match="runtime_checkable"):
                    isinstance(1, m)
            continue
        if mine.__name__ == "Explicit":
            assert isinstance(mine(), mine) and isinstance(theirs(), theirs)
            assert isinstance(mine(), _protocols(light)[0])
            continue
        assert [isinstance(o, mine) for o in objects] == [isinstance(o, theirs)
                                                          for o in objects], mine
    with pytest.raises(TypeError):
        light.runtime_checkable(_Full)
    with pytest.raises(TypeError, match="cannot be instantiated"):
        _protocols(light)[0]()


def _points(t):
    class Point(t.NamedTuple):
        """A point."""

        x: int
        y: int = 2

        def norm(self) -> int:
            return self.x + self.y

    return Point


def test_named_tuples_as_typings() -> None:
    mine, theirs = _points(light), _points(typing)
    for cls in (mine, theirs):
        p = cls(1)
        assert p == (1, 2) and p.norm() == 3 and p._replace(y=5) == (1, 5)
        assert cls._fields == ("x", "y") and cls._field_defaults == {"y": 2}
        assert cls.__doc__ == "A point." and cls.__name__ == "Point"
        assert isinstance(p, tuple) and cls._make([3, 4]).y == 4
        assert list(cls.__annotations__) == ["x", "y"]
    assert mine.__module__ == theirs.__module__
    with pytest.raises(TypeError, match="Non-default"):
        class Bad(light.NamedTuple):
            a: int = 1
            b: int
    with pytest.raises(AttributeError, match="overwrite"):
        class Worse(light.NamedTuple):
            a: int

            def _asdict(self) -> dict:
                return {}
    assert light.NamedTuple("P", [("a", int)])(1).a == 1


def test_generic_typevar_overload() -> None:
    T = light.TypeVar("T")

    class Box(light.Generic[T]):
        def __init__(self, value: object) -> None:
            self.value = value

        @light.overload
        def get(self, default: None) -> object: ...

        def get(self, default: object = None) -> object:  # noqa: F811
            return self.value if self.value is not None else default

    assert Box[int] is Box and Box(3).get() == 3 and Box(None).get(5) == 5


def test_run_imports_no_typing_before_the_guest_starts(tmp_path) -> None:
    """``vmforge run -M riscv-virt`` builds its machine without importing typing (the
    modules on its way take their run-time forms from vmforge.typing_runtime)."""
    pytest.importorskip("vmforge_riscv_virt")
    import subprocess
    import sys

    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(4096))
    code = ("import sys\nsys.modules.pop('typing', None)\n"
            "from vmforge.cli.main import main\nstatus = main(sys.argv[1:])\n"
            "print(status, 'typing' in sys.modules, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code, "run", "-M", "riscv-virt", "-m", "64M",
                          "-bios", "none", "-kernel", str(kernel), "-nographic",
                          "--timeout", "0"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.stderr.splitlines()[-1] == "124 False", out.stderr
