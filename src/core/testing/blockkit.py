"""The conformance suite every disk-format plugin should pass.

Use it from a plugin's own tests::

    from vmforge.testing.blockkit import BlockDriverConformance

    class TestMyFormatConformance(BlockDriverConformance):
        format_name = "myfmt"
        create_kwargs = {"cluster_size": 65536}   # optional create options

or run it against any installed format with ``pytest --vmforge-format NAME``.
Each test is small (a 4 MiB image): the whole suite takes seconds.

Create options.  ``create_kwargs`` are passed to every ``create`` of a plugin's
own subclass.  In a ``--vmforge-format`` run they come from the hook
``pytest_vmforge_create_options(format_name)`` (a plugin's ``conftest.py``
states what its format needs), then from ``--vmforge-create-opt
[FORMAT:]NAME=VALUE`` on the command line, which wins.

Read-only formats.  A format whose driver has no ``create`` (bochs, cloop) runs
in the read-only mode: the kit's images are built by a *builder*, a function
``build(path, data)`` writing ``data`` (the kit's reference contents, a
multiple of 512 bytes) as an image of the format: the subclass's
``build_image``, or in a ``--vmforge-format`` run the hook
``pytest_vmforge_build_image(format_name, path, data)``.  The read tests run on
those images, the write tests are skipped, and ``test_writes_refused`` checks
that ``create``, a read-write open and every write are refused, the file left
as it was.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import (
    BLOCK_API_VERSION,
    BlockDriver,
    BlockError,
    BlockRangeError,
    CheckResult,
    CreateOption,
    ImageInfo,
    ReadOnlyError,
    UnsupportedOperation,
)
from vmforge.block.probe import driver_class

__all__ = ["BlockDriverConformance", "ImageBuilder", "KitSetup", "is_read_only",
           "reference_data"]

MiB = 1 << 20
#: (offset, length) of writes that cross every usual alignment
ODD_WRITES = ((0, 1), (1, 513), (511, 4097), (4095, 2), (65535, 70000), (MiB - 3, 7),
              (2 * MiB + 12345, 131072 + 17), (3 * MiB + 77, 1))

#: ``build(path, data)``: writes ``data`` as an image of a read-only format
ImageBuilder = Callable[[str, bytes], None]


def reference_data(size: int) -> bytearray:
    """The contents of the kit's written image: the seeded ``ODD_WRITES`` on zeros."""
    model = bytearray(size)
    rng = random.Random(1)
    for off, n in ODD_WRITES:
        if off + n <= size:
            model[off:off + n] = rng.randbytes(n)
    return model


def is_read_only(cls: type[BlockDriver]) -> bool:
    """The driver cannot make images (it does not override ``create``)."""
    return getattr(cls.create, "__func__", None) is vars(BlockDriver)["create"].__func__


@dataclass
class KitSetup:
    """How the kit makes images of the format under test (the ``kit`` fixture)."""

    format_name: str
    read_only: bool
    create_options: dict[str, Any] = field(default_factory=dict)
    builder: ImageBuilder | None = None

    def make(self, cls: type[BlockDriver], path: str, data: bytes | bytearray) -> None:
        """An image at ``path`` holding ``data``: created and written, or built."""
        if not self.read_only:
            cls.create(path, len(data), **self.create_options)
            if any(data):
                with cls.open(path, readonly=False) as drv:
                    drv.write(0, data)
            return
        if self.builder is None:
            _no_builder(self.format_name)
        else:
            self.builder(path, bytes(data))


def _no_builder(format_name: str) -> NoReturn:
    pytest.fail(f"format {format_name} cannot create images, so the kit needs a builder "
                "to make them: set build_image on the conformance class, or implement "
                "pytest_vmforge_build_image(format_name, path, data) in a conftest.py "
                "(e.g. the plugin's tests/conftest.py, loaded when its tests folder is on "
                "pytest's command line)", pytrace=False)


def _skip_if_read_only(kit: KitSetup) -> None:
    if kit.read_only:
        pytest.skip(f"format {kit.format_name} is read-only (test_writes_refused)")


class BlockDriverConformance:
    """Generic tests of one format; subclass as ``Test...`` and set ``format_name``."""

    #: the format under test (empty: taken from ``--vmforge-format``)
    format_name: ClassVar[str] = ""
    #: create options used for every image the suite makes
    create_kwargs: ClassVar[dict[str, Any]] = {}
    #: read-only formats: ``build(path, data)`` writes ``data`` as an image
    #: (wrap a function in ``staticmethod``)
    build_image: ClassVar[ImageBuilder | None] = None
    #: virtual size of the images the suite makes (a multiple of 512)
    image_size: ClassVar[int] = 4 * MiB
    #: how many random header mutations ``test_corrupt_headers_rejected`` tries
    corruptions: ClassVar[int] = 48

    # -- fixtures --------------------------------------------------------------------

    @pytest.fixture
    def vmforge_format(self) -> str | None:
        """None here; ``--vmforge-format`` parametrizes it (and the kit works even with
        pytest's plugin autoload off, when vmforge's pytest plugin is not loaded)."""
        return None

    @pytest.fixture
    def block_format(self, vmforge_format: str | None) -> str:
        name = self.format_name or vmforge_format
        if not name:
            pytest.skip("no format: set format_name or pass --vmforge-format")
        return name

    @pytest.fixture
    def driver_cls(self, block_format: str) -> type[BlockDriver]:
        return driver_class(block_format)

    @pytest.fixture
    def kit(self, request: pytest.FixtureRequest, driver_cls: type[BlockDriver],
            block_format: str) -> KitSetup:
        """The create options and, for a read-only format, the image builder."""
        setup = KitSetup(block_format, is_read_only(driver_cls), dict(self.create_kwargs))
        builder = type(self).build_image
        from_option = not self.format_name
        hook = getattr(request.config.hook, "pytest_vmforge_create_options", None)
        if from_option and hook is not None:
            setup.create_options.update(hook(format_name=block_format) or {})
        if from_option:
            cli = getattr(request.config, "vmforge_create_opts", {})
            setup.create_options.update(cli.get("", {}))
            setup.create_options.update(cli.get(block_format, {}))
        if setup.read_only:
            if setup.create_options:
                pytest.fail(f"format {block_format} cannot create images: create options "
                            f"{sorted(setup.create_options)} make no sense", pytrace=False)
            if builder is None and from_option:
                build_hook = getattr(request.config.hook, "pytest_vmforge_build_image", None)
                if build_hook is not None:
                    def builder(path: str, data: bytes) -> None:
                        if not build_hook(format_name=block_format, path=path, data=data):
                            _no_builder(block_format)
            setup.builder = builder
        else:
            try:
                driver_cls.parse_create_options(setup.create_options)
            except ValueError as exc:
                pytest.fail(f"the kit's create options for {block_format}: {exc}",
                            pytrace=False)
        return setup

    @pytest.fixture
    def image(self, driver_cls: type[BlockDriver], kit: KitSetup, tmp_path: Path) -> str:
        """A fresh image of ``image_size`` bytes (built, for a read-only format)."""
        path = str(tmp_path / f"disk.{driver_cls.format_name}")
        if kit.read_only:
            kit.make(driver_cls, path, bytes(self.image_size))
        else:
            driver_cls.create(path, self.image_size, **kit.create_options)
        return path

    @pytest.fixture
    def written(self, driver_cls: type[BlockDriver], kit: KitSetup,
                tmp_path: Path) -> tuple[str, bytearray]:
        """An image with the odd writes done, and the model of its contents."""
        if kit.read_only:
            model = reference_data(self.image_size)
            path = str(tmp_path / f"written.{driver_cls.format_name}")
            kit.make(driver_cls, path, model)
            return path, model
        image = str(tmp_path / f"disk.{driver_cls.format_name}")
        driver_cls.create(image, self.image_size, **kit.create_options)
        model = bytearray(self.image_size)
        rng = random.Random(1)
        with driver_cls.open(image, readonly=False) as drv:
            for off, n in ODD_WRITES:
                data = rng.randbytes(n)
                drv.write(off, data)
                model[off:off + n] = data
            drv.flush()
        return image, model

    @staticmethod
    def _open(cls: type[BlockDriver], path: str, readonly: bool = True) -> BlockDriver:
        return cls.open(path, readonly=readonly)

    # -- the class ---------------------------------------------------------------------

    def test_declares_itself(self, driver_cls: type[BlockDriver], block_format: str) -> None:
        assert issubclass(driver_cls, BlockDriver)
        assert driver_cls.format_name == block_format
        assert driver_cls.api_version == BLOCK_API_VERSION
        for name, opt in driver_cls.create_options.items():
            assert isinstance(opt, CreateOption) and opt.name == name and opt.help
        assert driver_cls.granularity > 0

    def test_probe_own_header_and_junk(self, driver_cls: type[BlockDriver], image: str) -> None:
        with open(image, "rb") as f:
            header = f.read(512)
        assert driver_cls.probe(header, image) > 0
        rng = random.Random(2)
        for junk in (b"", b"\0" * 512, b"\xff" * 512, rng.randbytes(512), header[:3]):
            score = driver_cls.probe(junk, "junk")
            assert isinstance(score, int) and 0 <= score <= 100

    # -- creating and reading ----------------------------------------------------------

    @pytest.mark.parametrize("size", [512, 3 * MiB + 1536])
    def test_create_sizes_read_zeros(self, driver_cls: type[BlockDriver], kit: KitSetup,
                                     tmp_path: Path, size: int) -> None:
        path = str(tmp_path / "sized")
        kit.make(driver_cls, path, bytes(size))
        with self._open(driver_cls, path) as drv:
            assert drv.size == size
            assert drv.read(0, size) == bytes(size)
            assert drv.read(size - 1, 1) == b"\0"
            assert drv.read(size, 0) == b""

    def test_fresh_image_status_is_zero(self, driver_cls: type[BlockDriver], image: str) -> None:
        with self._open(driver_cls, image) as drv:
            extents = self._covering(drv, 0, drv.size)
            for e in extents:
                if e.is_zero or not e.is_data:
                    assert drv.read(e.offset, min(e.length, MiB)) == bytes(min(e.length, MiB))

    def test_patterns_at_odd_offsets(self, driver_cls: type[BlockDriver],
                                     written: tuple[str, bytearray]) -> None:
        image, model = written
        with self._open(driver_cls, image) as drv:
            assert drv.read(0, drv.size) == model
            for off, n in ODD_WRITES:
                lo, hi = max(0, off - 3), min(drv.size, off + n + 5)
                assert drv.read(lo, hi - lo) == model[lo:hi], f"at {lo}..{hi}"

    def test_vectored_io(self, driver_cls: type[BlockDriver], kit: KitSetup,
                         tmp_path: Path) -> None:
        if kit.read_only:
            model = reference_data(self.image_size)
            path = str(tmp_path / "vectored")
            kit.make(driver_cls, path, model)
            with self._open(driver_cls, path) as drv:
                bufs = [bytearray(n) for n in (1, 70002, 4096, 3)]
                drv.preadv(776, [memoryview(b) for b in bufs])
            assert b"".join(bufs) == model[776:776 + sum(map(len, bufs))]
            return
        image = str(tmp_path / "vectored")
        kit.make(driver_cls, image, bytes(self.image_size))
        parts = [os.urandom(n) for n in (3, 4093, 70001)]
        with self._open(driver_cls, image, readonly=False) as drv:
            drv.pwritev(777, [memoryview(p) for p in parts])
            bufs = [bytearray(n) for n in (1, 70002, 4096)]
            drv.preadv(776, [memoryview(b) for b in bufs])
        assert b"".join(bufs) == b"\0" + b"".join(parts) + b"\0"

    @pytest.mark.vmforge_kit("writable")
    def test_reopen_after_flush(self, driver_cls: type[BlockDriver], kit: KitSetup,
                                written: tuple[str, bytearray]) -> None:
        _skip_if_read_only(kit)
        image, model = written
        with self._open(driver_cls, image, readonly=False) as drv:
            drv.write(5, b"again")
            model[5:10] = b"again"
            drv.flush()
        with self._open(driver_cls, image) as drv:
            assert drv.size == self.image_size
            assert drv.read(0, drv.size) == model

    @pytest.mark.vmforge_kit("writable")
    def test_overwrite_in_place(self, driver_cls: type[BlockDriver], kit: KitSetup,
                                written: tuple[str, bytearray]) -> None:
        _skip_if_read_only(kit)
        image, model = written
        with self._open(driver_cls, image, readonly=False) as drv:
            for off, n in ODD_WRITES:
                drv.write(off, b"\xee" * n)
                model[off:off + n] = b"\xee" * n
            assert drv.read(0, drv.size) == model

    def test_discard_zero_length_and_double_close(self, driver_cls: type[BlockDriver],
                                                  kit: KitSetup,
                                                  written: tuple[str, bytearray]) -> None:
        image, model = written
        drv = self._open(driver_cls, image, readonly=kit.read_only)
        if not kit.read_only:
            drv.discard(65536, 131072)  # a hint: contents there become unspecified
            model[65536:196608] = drv.read(65536, 131072)
        assert drv.read(0, drv.size) == model
        assert drv.read(drv.size, 0) == b""
        if not kit.read_only:
            drv.write(drv.size, b"")
        assert list(drv.block_status(drv.size, 0)) == []
        drv.close()
        drv.close()
        with self._open(driver_cls, image) as again:
            assert again.read(0, again.size) == model

    # -- block status ------------------------------------------------------------------

    @staticmethod
    def _covering(drv: BlockDriver, offset: int, length: int) -> list[Any]:
        extents = list(drv.block_status(offset, length))
        pos = offset
        for e in extents:
            assert e.offset == pos, f"extents not contiguous at {pos}: {e}"
            assert e.length > 0, f"empty extent {e}"
            pos = e.end
        assert pos == offset + length, f"extents end at {pos}, not {offset + length}"
        return extents

    def test_block_status_agrees_with_data(self, driver_cls: type[BlockDriver],
                                           written: tuple[str, bytearray]) -> None:
        image, model = written
        with self._open(driver_cls, image) as drv:
            for e in self._covering(drv, 0, drv.size):
                if e.is_zero:
                    assert not any(model[e.offset:e.end]), f"{e} but data there"
                if not e.is_data and not e.is_zero and not e.is_allocated:
                    assert not any(model[e.offset:e.end]), f"{e} unallocated but written"
                if e.is_data and e.host_offset is not None:  # the data sits there, plainly
                    n = min(e.length, 4096)
                    with open(e.filename or image, "rb") as f:   # (an extent's own file)
                        f.seek(e.host_offset)
                        assert f.read(n) == model[e.offset:e.offset + n], f"{e}: host offset"
            for off, n in ODD_WRITES:  # sub-ranges at odd places are covered exactly
                self._covering(drv, off, min(n, drv.size - off))
            with pytest.raises(BlockRangeError):
                list(drv.block_status(drv.size - 1, 2))

    # -- zeroes, truncate ----------------------------------------------------------------

    @pytest.mark.parametrize("unmap", [False, True])
    @pytest.mark.vmforge_kit("writable")
    def test_write_zeroes(self, driver_cls: type[BlockDriver], kit: KitSetup,
                          written: tuple[str, bytearray], unmap: bool) -> None:
        _skip_if_read_only(kit)
        image, model = written
        with self._open(driver_cls, image, readonly=False) as drv:
            for off, n in ((3, 600), (65536, 65536), (MiB - 100, MiB + 300)):
                drv.write_zeroes(off, n, may_unmap=unmap)
                model[off:off + n] = bytes(n)
            assert drv.read(0, drv.size) == model
            for e in self._covering(drv, 0, drv.size):
                if e.is_zero:
                    assert not any(model[e.offset:e.end])

    @pytest.mark.vmforge_kit("writable")
    def test_truncate(self, driver_cls: type[BlockDriver], kit: KitSetup,
                      written: tuple[str, bytearray]) -> None:
        _skip_if_read_only(kit)
        image, model = written
        with self._open(driver_cls, image, readonly=False) as drv:
            try:
                drv.truncate(self.image_size + MiB)
            except UnsupportedOperation:
                # a format that cannot resize says so and leaves the image as it was
                assert drv.size == self.image_size
                assert drv.read(0, 4096) == model[:4096]
                return
            assert drv.size == self.image_size + MiB
            assert drv.read(self.image_size, MiB) == bytes(MiB)
            small = 2 * MiB + 512
            drv.truncate(small)
            assert drv.size == small
            assert drv.read(0, small) == model[:small]
            drv.truncate(self.image_size)
            assert drv.read(small, self.image_size - small) == bytes(self.image_size - small)
        with self._open(driver_cls, image) as drv:
            assert drv.size == self.image_size
            assert drv.read(0, small) == model[:small]

    # -- refusals ------------------------------------------------------------------------

    def test_readonly_refuses_writes(self, driver_cls: type[BlockDriver],
                                     written: tuple[str, bytearray]) -> None:
        image, model = written
        with open(image, "rb") as f:
            before = f.read()
        with self._open(driver_cls, image) as drv:
            with pytest.raises(ReadOnlyError):
                drv.write(0, b"x")
            with pytest.raises(BlockError):
                drv.pwritev(0, [memoryview(b"x")])
            with pytest.raises(BlockError):
                drv.write_zeroes(0, 512)
            with pytest.raises(BlockError):
                drv.truncate(self.image_size * 2)
            assert drv.read(0, drv.size) == model
            list(drv.block_status(0, drv.size))
            drv.check()
            drv.flush()
        with open(image, "rb") as f:
            assert f.read() == before, "a read-only open changed the file"

    def test_out_of_range(self, driver_cls: type[BlockDriver], kit: KitSetup,
                          image: str) -> None:
        with self._open(driver_cls, image, readonly=kit.read_only) as drv:
            with pytest.raises(BlockRangeError):
                drv.read(drv.size - 1, 2)
            if not kit.read_only:
                with pytest.raises(BlockRangeError):
                    drv.write(drv.size, b"x")
            with pytest.raises(BlockRangeError):
                drv.read(-1, 1)

    def _assert_clean_failure(self, cls: type[BlockDriver], path: str, what: str) -> None:
        """Opening and using ``path`` either works or raises BlockError: nothing else."""
        try:
            drv = cls.open(path, readonly=True)
        except BlockError:
            return
        except Exception as exc:
            pytest.fail(f"{what}: open raised {type(exc).__name__}: {exc}, not a BlockError")
        try:
            n = min(drv.size, 8 * MiB)
            for _ in self._limited(drv.block_status(0, n)):
                pass
            drv.read(0, n)
            result = drv.check()
            assert isinstance(result, CheckResult)
        except BlockError:
            pass
        except Exception as exc:
            pytest.fail(f"{what}: use raised {type(exc).__name__}: {exc}, not a BlockError")
        finally:
            try:
                drv.close()
            except BlockError:
                pass

    @staticmethod
    def _limited(it: Iterator[Any], limit: int = 1 << 16) -> Iterator[Any]:
        for i, item in enumerate(it):
            if i >= limit:
                return
            yield item

    def test_truncated_files_rejected(self, driver_cls: type[BlockDriver],
                                      written: tuple[str, bytearray], tmp_path: Path) -> None:
        image, _ = written
        length = os.path.getsize(image)
        for cut in sorted({0, 1, 7, 64, 511, 512, 4095, 4096, 65536, length // 2, length - 1}):
            if cut >= length:
                continue
            bad = str(tmp_path / f"cut{cut}")
            shutil.copyfile(image, bad)
            os.truncate(bad, cut)
            self._assert_clean_failure(driver_cls, bad, f"file cut to {cut} bytes")

    def test_corrupt_headers_rejected(self, driver_cls: type[BlockDriver],
                                      written: tuple[str, bytearray], tmp_path: Path) -> None:
        image, _ = written
        with open(image, "rb") as f:
            original = f.read(65536)
        rng = random.Random(3)
        bad = str(tmp_path / "bad")
        for i in range(self.corruptions):
            data = bytearray(original)
            span = min(len(data), 512 if i % 2 else 4096)
            for _ in range(1 + i % 4):
                at = rng.randrange(span)
                if i % 3 == 0 and at + 8 <= span:  # a field set to a huge value
                    data[at:at + 8] = b"\xff" * 8 if i % 2 else b"\x7f" + b"\xff" * 7
                else:
                    data[at] = rng.randrange(256)
            shutil.copyfile(image, bad)
            with open(bad, "r+b") as f:
                f.write(data)
            self._assert_clean_failure(driver_cls, bad, f"corruption #{i}")

    # -- the rest of the API --------------------------------------------------------------

    def test_check_clean_and_info(self, driver_cls: type[BlockDriver],
                                  written: tuple[str, bytearray]) -> None:
        image, _ = written
        with self._open(driver_cls, image) as drv:
            result = drv.check()
            assert isinstance(result, CheckResult) and result.clean, result.messages
            info = drv.info()
            assert isinstance(info, ImageInfo)
            assert info.format == driver_cls.format_name
            assert info.virtual_size == self.image_size

    def test_measure(self, driver_cls: type[BlockDriver], kit: KitSetup) -> None:
        try:
            empty = driver_cls.measure(self.image_size, None, **kit.create_options)
        except UnsupportedOperation as exc:
            assert driver_cls.format_name in str(exc)  # refused, naming the format
            return
        full = driver_cls.measure(self.image_size, [(0, self.image_size)],
                                  **kit.create_options)
        assert 0 <= empty["required"] <= empty["fully-allocated"]
        assert full["required"] >= self.image_size

    @pytest.mark.vmforge_kit("writable")
    def test_compressed_writes_from_two_threads(self, driver_cls: type[BlockDriver],
                                                kit: KitSetup, image: str) -> None:
        _skip_if_read_only(kit)
        with self._open(driver_cls, image, readonly=False) as drv:
            if not driver_cls.supports_compressed_writes:
                # refused cleanly, nothing written
                before = drv.read(0, drv.granularity)
                with pytest.raises(UnsupportedOperation):
                    drv.write_compressed(0, bytes(drv.granularity))
                assert drv.read(0, drv.granularity) == before
                return
            g = drv.granularity
            chunks = {i * g: (bytes([i + 1]) * 100 + os.urandom(64)) * (g // 164 + 1)
                      for i in range(8)}
            chunks = {off: data[:g] for off, data in chunks.items()}
            errors: list[BaseException] = []

            def work(offsets: list[int]) -> None:
                try:
                    for off in offsets:
                        drv.write_compressed(off, chunks[off])
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(sorted(chunks)[k::2],))
                       for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for off, data in chunks.items():
                assert drv.read(off, g) == data
        with self._open(driver_cls, image) as drv:
            assert drv.check().clean

    @pytest.mark.vmforge_kit("writable")
    def test_backing_file_copy_on_write(self, driver_cls: type[BlockDriver], kit: KitSetup,
                                        written: tuple[str, bytearray],
                                        tmp_path: Path) -> None:
        base, model = written
        if kit.read_only:   # no create at all: covered by test_writes_refused
            assert not driver_cls.supports_backing, "a read-only format with backing files"
            pytest.skip(f"format {kit.format_name} is read-only")
        if not driver_cls.supports_backing:
            # a create option it does not have is refused, naming the option
            with pytest.raises(ValueError, match="backing_file"):
                driver_cls.create(str(tmp_path / "overlay"), self.image_size,
                                  **dict(kit.create_options, backing_file=base))
            return
        before = bytes(model)
        overlay = str(tmp_path / "overlay")
        opts = dict(kit.create_options, backing_file=os.path.basename(base),
                    backing_fmt=driver_cls.format_name)
        driver_cls.create(overlay, self.image_size, **opts)
        with BlockBackend.open(overlay, driver_cls.format_name, readonly=False) as bb:
            assert [la.filename for la in bb.layers][1] == base
            assert bb.read(0, bb.size) == model
            bb.write(1000, b"top")  # a partial unit: the rest must come from the base
            model[1000:1003] = b"top"
            assert bb.read(0, bb.size) == model
            depths = {e.depth for e in bb.block_status()}
            assert depths <= {0, 1} and 0 in depths
        with self._open(driver_cls, base) as drv:  # the base is untouched
            assert drv.read(0, drv.size) == before
        short = str(tmp_path / "short")  # growing an overlay exposes zeros, not the base
        driver_cls.create(short, self.image_size // 2, **opts)
        with BlockBackend.open(short, driver_cls.format_name, readonly=False) as bb:
            try:
                bb.truncate(self.image_size)
            except UnsupportedOperation:
                return
            half = self.image_size // 2
            assert bb.read(half, half) == bytes(half)
            assert bb.read(0, half) == before[:half]

    # -- read-only formats ----------------------------------------------------------------

    @pytest.mark.vmforge_kit("read_only")
    def test_writes_refused(self, driver_cls: type[BlockDriver], kit: KitSetup,
                            written: tuple[str, bytearray], tmp_path: Path) -> None:
        """A format without ``create``: no image is made, no open or write changes one."""
        if not kit.read_only:
            pytest.skip(f"format {kit.format_name} can create and write images")
        image, model = written
        with open(image, "rb") as f:
            before = f.read()
        new = str(tmp_path / "new")
        with pytest.raises(UnsupportedOperation, match=kit.format_name):
            driver_cls.create(new, self.image_size)
        assert not os.path.exists(new), "a refused create left a file"
        try:
            drv = driver_cls.open(image, readonly=False)
        except ReadOnlyError as exc:   # refused at open: the message names the file
            assert image in str(exc) and "read-only" in str(exc), str(exc)
        else:   # or opened, and every write refused
            with drv:
                for attempt in (lambda: drv.write(0, b"x"),
                                lambda: drv.pwritev(512, [memoryview(b"yy")]),
                                lambda: drv.write_zeroes(0, 512),
                                lambda: drv.truncate(self.image_size * 2),
                                lambda: drv.write_compressed(0, bytes(drv.granularity))):
                    with pytest.raises(BlockError):
                        attempt()
                assert drv.read(0, drv.size) == model
        with pytest.raises(BlockError):
            with BlockBackend.open(image, kit.format_name, readonly=False) as bb:
                bb.write(0, b"x")
        with open(image, "rb") as f:
            assert f.read() == before, "a refused write changed the file"
