"""Map-reduce over partitioned datasets: datasets, partitions, functions, jobs
(docs/mapreduce.md)."""

from taskworks.errors import BadRows
from taskworks.mapreduce.datasets import DatasetInfo, Datasets
from taskworks.mapreduce.functions import MapReduceFunction
from taskworks.mapreduce.jobs import Jobs, JobStatus, PartitionStatus
from taskworks.mapreduce.local import run_local
from taskworks.mapreduce.partitions import Partition, plan, read_partition
from taskworks.mapreduce.registry import FunctionRegistry

__all__ = ["BadRows", "DatasetInfo", "Datasets", "FunctionRegistry", "JobStatus", "Jobs",
           "MapReduceFunction", "Partition", "PartitionStatus", "plan", "read_partition",
           "run_local"]
