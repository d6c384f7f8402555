"""Every error taskworks raises on purpose derives from one root.

    TaskworksError
    ├── ConfigError          a setting has a value taskworks cannot use
    ├── BrokerError          the embedded broker could not start or be reached
    │   └── PortInUse        the configured port belongs to another program
    ├── StoreError           the SQL store could not be opened or migrated
    └── InvalidInput         a caller passed a value outside what an API accepts

Each message names the field, the value and what was expected, so a CLI can print it
as is and exit 2.
"""

from __future__ import annotations


class TaskworksError(Exception):
    """Root of every taskworks error."""


class ConfigError(TaskworksError):
    """A setting has a value taskworks cannot use."""


class BrokerError(TaskworksError):
    """The embedded broker could not be started or reached."""


class PortInUse(BrokerError):
    """The configured port is taken by another program."""


class StoreError(TaskworksError):
    """The SQL store could not be opened or migrated."""


class InvalidInput(TaskworksError):
    """A caller passed a value outside what an API accepts."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}: got {value!r}, expected {expected}")
