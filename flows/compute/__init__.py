"""The compute seam and its factory."""

from __future__ import annotations

import logging

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
from flows.datastore.base import Datastore
from flows.settings import Settings

__all__ = [
    "Compute",
    "EnvironmentRef",
    "EnvironmentSpec",
    "LocalCompute",
    "StepFailedError",
    "StepResult",
    "StepSpec",
    "WheelRef",
    "make_compute",
]


def make_compute(
    settings: Settings,
    datastore: Datastore,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> Compute:
    if settings.compute == "aml":
        from flows.compute.aml import AmlCompute

        return AmlCompute.from_settings(settings, logger=logger)
    return LocalCompute(
        datastore,
        cache_dir=settings.cache_dir,
        step_timeout_seconds=settings.step_timeout_seconds,
        logger=logger,
    )
