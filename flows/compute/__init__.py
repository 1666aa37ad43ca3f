"""The compute seam (the factory is flows/backends.py)."""

from __future__ import annotations

from flows.compute.base import (
    Compute,
    EnvironmentRef,
    EnvironmentSpec,
    StepFailedError,
    StepResult,
    StepSpec,
    WheelRef,
)
from flows.compute.local import LocalCompute

__all__ = [
    "Compute",
    "EnvironmentRef",
    "EnvironmentSpec",
    "LocalCompute",
    "StepFailedError",
    "StepResult",
    "StepSpec",
    "WheelRef",
]
