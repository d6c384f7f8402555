"""taskworks: production background work on Celery."""

from taskworks.app import Taskworks, TaskworksTask
from taskworks.errors import (
    BrokerError,
    ConfigError,
    InvalidInput,
    PortInUse,
    StoreError,
    TaskworksError,
)
from taskworks.settings import Settings, load_settings

__all__ = [
    "BrokerError",
    "ConfigError",
    "InvalidInput",
    "PortInUse",
    "Settings",
    "StoreError",
    "Taskworks",
    "TaskworksError",
    "TaskworksTask",
    "load_settings",
]

__version__ = "0.1.0"
