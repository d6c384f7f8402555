"""Map-reduce over partitioned datasets: datasets, partitions, functions (docs/mapreduce.md)."""

from taskworks.mapreduce.datasets import BadRows, DatasetInfo, Datasets
from taskworks.mapreduce.functions import MapReduceFunction
from taskworks.mapreduce.local import run_local
from taskworks.mapreduce.partitions import Partition, plan, read_partition
from taskworks.mapreduce.registry import FunctionRegistry

__all__ = ["BadRows", "DatasetInfo", "Datasets", "FunctionRegistry", "MapReduceFunction",
           "Partition", "plan", "read_partition", "run_local"]
