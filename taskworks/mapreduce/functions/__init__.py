"""Map-reduce functions: the contract (``base``), the params of the built-ins
(``params``), the four built-ins, and functions made of plain callables (``custom``)."""

from __future__ import annotations

from taskworks.mapreduce.functions.aggregation import Aggregation
from taskworks.mapreduce.functions.analysis import Analysis
from taskworks.mapreduce.functions.base import JobContext, MapContext, MapReduceFunction
from taskworks.mapreduce.functions.custom import (
    CustomCheck,
    CustomFunction,
    CustomMap,
    CustomReduce,
)
from taskworks.mapreduce.functions.transformation import Transformation
from taskworks.mapreduce.functions.validation import Validation

__all__ = ["BUILTINS", "Aggregation", "Analysis", "CustomCheck", "CustomFunction",
           "CustomMap", "CustomReduce", "JobContext", "MapContext", "MapReduceFunction",
           "Transformation", "Validation"]

BUILTINS: tuple[type[MapReduceFunction], ...] = (Validation, Transformation, Analysis,
                                                 Aggregation)
