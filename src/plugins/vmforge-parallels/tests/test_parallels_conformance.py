"""The parallels format passes vmforge's conformance kit (1 MiB and 4 KiB clusters)."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestParallelsConformance(BlockDriverConformance):
    format_name = "parallels"


class TestParallelsSmallClustersConformance(BlockDriverConformance):
    format_name = "parallels"
    create_kwargs = {"cluster_size": 4096}
