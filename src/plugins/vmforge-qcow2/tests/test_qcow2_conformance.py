"""The qcow2 driver passes vmforge's block-format conformance kit."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestQcow2Conformance(BlockDriverConformance):
    format_name = "qcow2"


class TestQcow2V2SmallClustersConformance(BlockDriverConformance):
    format_name = "qcow2"
    create_kwargs = {"compat": "0.10", "cluster_size": 4096}


class TestQcow2ExtendedL2Conformance(BlockDriverConformance):
    format_name = "qcow2"
    create_kwargs = {"extended_l2": True, "cluster_size": 16384}


class TestQcow2LazyRefcountsConformance(BlockDriverConformance):
    format_name = "qcow2"
    create_kwargs = {"lazy_refcounts": True, "refcount_bits": 8, "cluster_size": 1024}
