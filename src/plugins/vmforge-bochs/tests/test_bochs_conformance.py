"""The bochs format passes vmforge's conformance kit, read-only: images are built
from the kit's data, and every write is refused."""

from bochs_kit import ReadOnlyConformance, build_bochs


class TestBochsConformance(ReadOnlyConformance):
    format_name = "bochs"
    build = staticmethod(build_bochs)


class TestBochsV1SmallExtentsConformance(ReadOnlyConformance):
    format_name = "bochs"
    build = staticmethod(lambda path, data: build_bochs(path, data, extent=4096, version=1))
