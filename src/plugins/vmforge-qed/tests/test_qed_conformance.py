"""The qed format passes vmforge's conformance kit (default and small clusters)."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestQedConformance(BlockDriverConformance):
    format_name = "qed"


class TestQedSmallTablesConformance(BlockDriverConformance):
    format_name = "qed"
    # 4 KiB clusters, one-cluster tables: the kit's 4 MiB span eight L2 tables
    create_kwargs = {"cluster_size": 4096, "table_size": 1}
