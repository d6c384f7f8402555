"""Map-reduce functions by name: the built-ins plus what an application registers.

A job names its function; the name is looked up here, never in ``globals()``, so only
what was registered on purpose can run.
"""

from __future__ import annotations

import re

from taskworks.errors import InvalidInput
from taskworks.mapreduce.functions import (
    BUILTINS,
    CustomCheck,
    CustomFunction,
    CustomMap,
    CustomReduce,
    MapReduceFunction,
)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")


class FunctionRegistry:
    def __init__(self, builtins: bool = True) -> None:
        self._functions: dict[str, MapReduceFunction] = {}
        if builtins:
            for kind in BUILTINS:
                self.register(kind())

    def register(self, function: MapReduceFunction) -> MapReduceFunction:
        name = getattr(function, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput("name", name, "a function name: a letter, then letters, "
                               "digits or _ . : - (at most 128)")
        if name in self._functions:
            raise InvalidInput("name", name, "a function name not registered yet")
        self._functions[name] = function
        return function

    def custom(self, name: str, *, map: CustomMap, reduce: CustomReduce,
               check: CustomCheck | None = None) -> MapReduceFunction:
        """Register a map and a reduce given as plain callables under ``name``."""
        return self.register(CustomFunction(name, map, reduce, check))

    def get(self, name: str) -> MapReduceFunction:
        function = self._functions.get(name)
        if function is None:
            raise InvalidInput("function", name, f"a registered function: {', '.join(self)}")
        return function

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._functions))

    def __contains__(self, name: object) -> bool:
        return name in self._functions
