"""taskworks: production background work on Celery."""

from taskworks.app import Taskworks, TaskworksTask
from taskworks.errors import (
    BreakerOpen,
    BrokerError,
    ConfigError,
    InvalidInput,
    PortInUse,
    StoreError,
    TaskworksError,
    WorkflowInvalid,
)
from taskworks.resilience.breaker import CircuitBreaker
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.runtime.progress import progress
from taskworks.runtime.retry import RetryPolicy
from taskworks.settings import Settings, load_settings
from taskworks.workflows.model import Step, Workflow

__all__ = [
    "BreakerOpen",
    "BrokerError",
    "CircuitBreaker",
    "ConfigError",
    "InvalidInput",
    "Middleware",
    "PortInUse",
    "RetryPolicy",
    "Settings",
    "Step",
    "StoreError",
    "TaskContext",
    "Taskworks",
    "TaskworksError",
    "TaskworksTask",
    "Workflow",
    "WorkflowInvalid",
    "load_settings",
    "progress",
]

__version__ = "0.1.0"
